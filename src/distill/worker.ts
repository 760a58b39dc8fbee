/**
 * Runs a StepRunner in a worker_thread: ORT's session.run blocks its thread for the whole step (hundreds of ms at
 * real sizes), so the trainer's thread stays free for the progress bar, the teacher and the data pipeline.
 * `createTrainBackend(…, { inWorker: false })` gives the same interface in-thread (tests, debugging).
 */
import { Worker } from 'node:worker_threads';
import type { LlamaConfig } from '../models/config.js';
import { StepRunner, type EvalResult, type MicroBatch, type OptimizerState, type RunnerOptions, type StepResult } from './stepRunner.js';

export interface TrainBackend {
  step(micro: MicroBatch[], lr: number, step: number): Promise<StepResult>;
  evaluate(mb: MicroBatch): Promise<EvalResult>;
  getState(): Promise<OptimizerState>;
  dispose(): Promise<void>;
}

export interface InitialState { params: Map<string, Float32Array>; m?: Map<string, Float32Array>; v?: Map<string, Float32Array> }

export async function createTrainBackend(config: LlamaConfig, state: InitialState, opts: RunnerOptions, { inWorker = true } = {}): Promise<TrainBackend> {
  if (!inWorker) {
    const r = await StepRunner.create(config, state, opts);
    return { step: (m, lr, s) => r.step(m, lr, s), evaluate: (m) => r.evaluate(m), getState: async () => r.getState(), dispose: () => r.dispose() };
  }
  return WorkerBackend.start(config, state, opts);
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

class WorkerBackend implements TrainBackend {
  private nextId = 0;
  private pending = new Map<number, Pending>();
  private failure: Error | null = null;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (msg: { id: number; result?: unknown; error?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error !== undefined) p.reject(new Error(msg.error)); else p.resolve(msg.result);
    });
    const failAll = (e: Error) => {
      this.failure = e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => { if (code !== 0) failAll(new Error(`training worker exited with code ${code}`)); });
  }

  static async start(config: LlamaConfig, state: InitialState, opts: RunnerOptions): Promise<WorkerBackend> {
    const ts = import.meta.url.endsWith('.ts');
    const entry = new URL(`./workerMain.${ts ? 'ts' : 'js'}`, import.meta.url);
    // Running from sources (tsx): workers do not inherit tsx's loader hooks, so register them before importing the entry.
    const worker = ts
      ? new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`, { eval: true })
      : new Worker(entry);
    const backend = new WorkerBackend(worker);
    try {
      await backend.call('init', [config, state, opts]);
    } catch (e) {
      await worker.terminate(); // a live worker would keep the process from exiting
      throw e;
    }
    return backend;
  }

  private call<T>(method: string, args: unknown[], transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, method, args }, transfer);
    });
  }

  step(micro: MicroBatch[], lr: number, step: number) { return this.call<StepResult>('step', [micro, lr, step]); }
  evaluate(mb: MicroBatch) { return this.call<EvalResult>('evaluate', [mb]); }
  getState() { return this.call<OptimizerState>('getState', []); }
  async dispose(): Promise<void> {
    if (!this.failure) await this.call('dispose', []).catch(() => undefined);
    await this.worker.terminate();
  }
}
