export { Session, SessionError, feeds, ort, type OrtTensor, type SessionOptions } from './session.js';
