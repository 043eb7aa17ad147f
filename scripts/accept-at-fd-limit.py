#!/usr/bin/env python3
"""CPU of `zrpc serve` while its accept loop is at the open-file limit.

Runs the given zrpc binary under `prlimit --nofile=64:64` (so it cannot
raise the limit), holds 200 TCP connections to it so that accept fails with
EMFILE, and prints the server's CPU use over 5 s (from /proc) and its log
lines about accepting. A server that retries failed accepts in a busy loop
shows ~100% of a core.

    cargo build --release -p zrpc-cli
    python3 scripts/accept-at-fd-limit.py target/release/zrpc
"""
import os
import socket
import subprocess
import sys
import time

binary = sys.argv[1]
p = subprocess.Popen(
    ["prlimit", "--nofile=64:64", binary, "serve", "--addr", "127.0.0.1:0"],
    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
addr = p.stdout.readline().strip().rsplit(" ", 1)[-1]
host, port = addr.replace("ws://", "").rstrip("/").rsplit(":", 1)
held = [socket.create_connection((host, int(port))) for _ in range(200)]


def cpu_seconds():
    fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


time.sleep(1)
c0, t0 = cpu_seconds(), time.monotonic()
time.sleep(5)
c1, t1 = cpu_seconds(), time.monotonic()
p.kill()
p.wait()
log = [line for line in p.stderr.read().splitlines() if "accept" in line]
print(f"server CPU: {100 * (c1 - c0) / (t1 - t0):.1f}% of a core "
      f"with {len(held)} connections waiting at the open-file limit")
print(f"log lines about accepting: {len(log)}")
for line in log[:5]:
    print("  " + line)
