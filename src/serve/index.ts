export { startServer, type RunningServer, type ServerOptions } from './server.js';
export { BatchScheduler, QueueFullError, type SchedulerOptions, type SchedulerStats, type SequenceRequest, type SequenceResult } from './scheduler.js';
export { ApiError, parseChatRequest, parseCompletionRequest, type ParsedRequest } from './openai.js';
export { CHAT_PAGE_HTML } from './page.js';
