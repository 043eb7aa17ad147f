/** The browser side of the bench: the page's `runBench(url, workload, secs)` runs one row. */

import { connect } from "../src/index.js";
import { workloads } from "./workloads.js";

declare global {
  interface Window {
    runBench(url: string, workload: string, secs: number): Promise<Record<string, number>>;
  }
}

window.runBench = async (url, workload, secs) => {
  const w = workloads[workload];
  if (w === undefined) throw new Error(`unknown workload ${workload}`);
  const client = await connect(url);
  try {
    return await w.run(client, secs);
  } finally {
    await client.close();
  }
};
