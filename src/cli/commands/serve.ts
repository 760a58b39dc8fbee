import path from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer, DEFAULT_MODEL } from '../../api.js';
import { CHAT_TEMPLATE_CHOICES, chatFormat } from '../../chat/index.js';
import { startServer } from '../../serve/index.js';
import { int, str, threads, threadsOption, UsageError, type Command } from '../common.js';

export const serve: Command = {
  summary: 'serve a model over an OpenAI-compatible HTTP API with a web chat page',
  usage: `slimlm serve [--model PATH] [--tokenizer PATH] [--template NAME|FILE] [--host 127.0.0.1] [--port 8080]
             [--api-key KEY] [--parallel N] [--max-queue N] [--ctx N] [--max-body BYTES] [--model-id NAME] [--threads N]
  Endpoints: POST /v1/chat/completions, POST /v1/completions (stream: true for server-sent events),
  GET /v1/models, GET /health, and a chat page at /.
  --parallel   sequences decoded together in one batch (default 4); --max-queue requests waiting beyond them (default 64, then 503)
  --ctx        positions per sequence, prompt + reply (default: the model's context length)
  --api-key    require "Authorization: Bearer KEY" on /v1/* (also from SLIMLM_API_KEY)
  --model-id   the name clients pass as "model" (default: the model file or folder name)
  --template   ${CHAT_TEMPLATE_CHOICES}
  Binds 127.0.0.1 unless --host says otherwise. Ctrl-C stops the server.`,
  options: {
    model: { type: 'string' }, tokenizer: { type: 'string' }, template: { type: 'string' }, host: { type: 'string' },
    port: { type: 'string' }, 'api-key': { type: 'string' }, parallel: { type: 'string' }, 'max-queue': { type: 'string' },
    ctx: { type: 'string' }, 'max-body': { type: 'string' }, 'model-id': { type: 'string' }, ...threadsOption,
  },
  async run(v) {
    const modelPath = str(v, 'model') ?? DEFAULT_MODEL;
    const port = int(v, 'port', 8080)!;
    if (port < 0 || port > 65535) throw new UsageError('--port must be in 0..65535');
    const parallel = int(v, 'parallel', 4)!;
    if (parallel < 1) throw new UsageError('--parallel must be at least 1');
    const maxQueue = int(v, 'max-queue', 64)!;
    if (maxQueue < 0) throw new UsageError('--max-queue must be at least 0');
    const ctx = int(v, 'ctx');
    if (ctx !== undefined && ctx < 16) throw new UsageError('--ctx must be at least 16');
    const maxBody = int(v, 'max-body');
    if (maxBody !== undefined && maxBody < 1024) throw new UsageError('--max-body must be at least 1024 bytes');
    const apiKey = str(v, 'api-key') ?? process.env.SLIMLM_API_KEY;

    const model = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: threads(v) });
    try {
      const tokenizer = await AutoTokenizer.fromPretrained(str(v, 'tokenizer') ?? modelPath);
      if (tokenizer.vocabSize !== model.config.vocabSize) {
        throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) does not match the model's (${model.config.vocabSize})`);
      }
      const chat = chatFormat(tokenizer, str(v, 'template') ?? 'auto');
      const modelId = str(v, 'model-id') ?? path.basename(modelPath).replace(/\.(bin|gguf|safetensors)$/, '');
      const server = await startServer({
        model: model.model, tokenizer, chat, modelId, host: str(v, 'host') ?? '127.0.0.1', port, apiKey,
        parallel, maxQueue, contextLength: ctx, maxBodyBytes: maxBody,
      });
      process.stderr.write(`slimlm serve: ${modelId} on ${server.url} (template ${chat.name}, parallel ${parallel}, ` +
        `context ${server.scheduler.contextLength}${apiKey ? ', API key required' : ''}); chat page at ${server.url}/\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          process.stderr.write('slimlm serve: shutting down\n');
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await server.close();
    } finally {
      await model.dispose();
    }
  },
};
