/** A thin wrapper over an onnxruntime-node InferenceSession: create from model bytes, run with typed feeds, dispose. */
import ort from 'onnxruntime-node';

export type OrtTensor = ort.Tensor;

export interface SessionOptions {
  /** Intra-op threads (default: ORT's choice, one per core). */
  threads?: number;
  optimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Reuse a memory plan across runs of equal shapes (ORT default true). */
  enableMemPattern?: boolean;
  /** Keep weights as given instead of re-packing them for GEMM (halves weight memory; little effect on decode). */
  disablePrepacking?: boolean;
  /** ORT log level: 0 verbose … 3 error (default), 4 fatal. */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
}

export class SessionError extends Error {
  override name = 'SessionError';
}

export class Session {
  private disposed = false;
  private constructor(private readonly session: ort.InferenceSession) {}

  /** From model bytes, or from a model file path (whose external data ORT memory-maps). */
  static async create(model: Uint8Array | string, opts: SessionOptions = {}): Promise<Session> {
    try {
      const options: ort.InferenceSession.SessionOptions = {
        ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: opts.optimizationLevel ?? 'all',
        enableMemPattern: opts.enableMemPattern ?? true,
        logSeverityLevel: opts.logSeverityLevel ?? 3,
        ...(opts.disablePrepacking ? { extra: { session: { disable_prepacking: '1' } } } : {}),
      };
      const session = typeof model === 'string'
        ? await ort.InferenceSession.create(model, options)
        : await ort.InferenceSession.create(model, options);
      return new Session(session);
    } catch (e) {
      throw new SessionError(`onnxruntime could not load the model: ${(e as Error).message}`);
    }
  }

  get inputNames(): readonly string[] { return this.session.inputNames; }
  get outputNames(): readonly string[] { return this.session.outputNames; }

  /**
   * Run with every graph input fed; returns the requested outputs (all by default). `outputs` may map output names to
   * tensors ORT writes into directly (null = ORT allocates); the returned values are copies either way.
   */
  async run(feeds: Record<string, OrtTensor>, outputs?: readonly string[] | Record<string, OrtTensor | null>): Promise<Record<string, OrtTensor>> {
    if (this.disposed) throw new SessionError('session was disposed');
    const missing = this.session.inputNames.filter((n) => !(n in feeds));
    if (missing.length) throw new SessionError(`missing feeds: ${missing.join(', ')} (inputs: ${this.session.inputNames.join(', ')})`);
    try {
      const fetches = !outputs ? this.session.outputNames : Array.isArray(outputs) ? [...outputs] : outputs;
      return await this.session.run(feeds, fetches as ort.InferenceSession.FetchesType);
    } catch (e) {
      throw new SessionError(`onnxruntime run failed: ${(e as Error).message}`);
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.session.release();
  }
}

/** Typed feed constructors (ORT wants BigInt64Array for int64). */
export const feeds = {
  f32: (data: Float32Array | readonly number[], dims: readonly number[]) =>
    new ort.Tensor('float32', data instanceof Float32Array ? data : Float32Array.from(data), dims),
  i64: (data: BigInt64Array | readonly number[], dims: readonly number[]) =>
    new ort.Tensor('int64', data instanceof BigInt64Array ? data : BigInt64Array.from(data, (v) => BigInt(v)), dims),
  i32: (data: Int32Array | readonly number[], dims: readonly number[]) =>
    new ort.Tensor('int32', data instanceof Int32Array ? data : Int32Array.from(data), dims),
  bool: (data: Uint8Array | readonly boolean[], dims: readonly number[]) =>
    new ort.Tensor('bool', data instanceof Uint8Array ? data : Uint8Array.from(data, (v) => (v ? 1 : 0)), dims),
};

export { ort };
