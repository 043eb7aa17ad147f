/**
 * The zrpc v1 protocol, sans-IO: frames, BATCH, and the connection state
 * machine. Bind it to any transport; `../transport.ts` binds it to a WebSocket.
 */

export * from "./bytes.js";
export * from "./call.js";
export * from "./config.js";
export * from "./connection.js";
export * from "./frame.js";
export * from "./metadata.js";
export * from "./status.js";
