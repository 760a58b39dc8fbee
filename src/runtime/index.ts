export { Session, SessionError, feeds, ort, type OrtTensor, type SessionOptions } from './session.js';
export { sessionFromGraph } from './fromGraph.js';
export { collectGarbage, mallocTuned, peakRssBytes, TRAINING_MALLOC_TUNABLES } from './memory.js';
