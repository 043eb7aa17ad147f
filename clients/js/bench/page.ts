/** The browser side of the bench: the page's `runBench(url, workload, secs, channel)` runs one row. */

import { Channel } from "../src/channel.js";
import { connect } from "../src/index.js";
import { plainRows, plainStream, workloads } from "./workloads.js";

declare global {
  interface Window {
    runBench(url: string, workload: string, secs: number, channel?: boolean): Promise<Record<string, number>>;
    runPlain(url: string, workload: string, secs: number): Promise<Record<string, number>>;
  }
}

window.runBench = async (url, workload, secs, channel = false) => {
  const w = workloads[workload];
  if (w === undefined) throw new Error(`unknown workload ${workload}`);
  const client = channel ? new Channel(url) : await connect(url);
  try {
    return await w.run(client, secs);
  } finally {
    await client.close();
  }
};

window.runPlain = async (url, workload, secs) => {
  const len = plainRows[workload];
  if (len === undefined) throw new Error(`no plain row for ${workload}`);
  return await plainStream((u) => new WebSocket(u), url, len, secs);
};
