export { jsonApi, JsonReply, defaultHttpError, DEFAULT_MAX_BODY_BYTES } from './json-api.js';
export type { Authorization, Caller, ErrorMapper, JsonApiOptions, Method, Route, RouteRequest } from './json-api.js';
export { listenHttp, formatAddress, answerInJson } from './listen.js';
export type { HttpListener, HttpListenOptions } from './listen.js';
