export { Session, SessionError, feeds, ort, type OrtTensor, type SessionOptions } from './session.js';
export { sessionFromGraph } from './fromGraph.js';
export { peakRssBytes } from './memory.js';
