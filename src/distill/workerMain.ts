/** Worker-thread entry of the training backend (./worker.ts): owns one StepRunner and answers its calls in order. */
import { parentPort } from 'node:worker_threads';
import { StepRunner } from './stepRunner.js';

let runner: StepRunner | null = null;

parentPort!.on('message', async ({ id, method, args }: { id: number; method: string; args: unknown[] }) => {
  try {
    let result: unknown;
    if (method === 'init') { // the state arrived as a structured clone: this thread's own copy
      const [config, state, opts] = args as Parameters<typeof StepRunner.create>;
      runner = await StepRunner.create(config, state, { ...opts, adoptState: true });
    }
    else if (!runner) throw new Error('training worker used before init');
    else if (method === 'step') result = await runner.step(...(args as Parameters<StepRunner['step']>));
    else if (method === 'evaluate') result = await runner.evaluate(...(args as Parameters<StepRunner['evaluate']>));
    else if (method === 'getState') result = runner.getState(); // structured clone copies: the runner keeps its buffers
    else if (method === 'dispose') { await runner.dispose(); runner = null; }
    else throw new Error(`unknown method ${method}`);
    parentPort!.postMessage({ id, result });
  } catch (e) {
    parentPort!.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
  }
});
