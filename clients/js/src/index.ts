/**
 * zrpc for browsers and Node: every call kind over one WebSocket, with
 * per-call flow control. See README.md for the API.
 */

export {
  type BidiCall,
  type CallOptions,
  Client,
  type CloseInfo,
  type ConnectOptions,
  connect,
  type Handler,
  type HandlerContext,
  type Handlers,
} from "./client.js";
export type { Config } from "./protocol/config.js";
export type { CallKind } from "./protocol/frame.js";
export { getText, type Metadata, type MetadataInit, type MetadataValue } from "./protocol/metadata.js";
export { Code, type CodeName, type Status, ZrpcError } from "./protocol/status.js";
export { SUBPROTOCOL, type WebSocketConstructor, type WebSocketLike } from "./transport.js";
