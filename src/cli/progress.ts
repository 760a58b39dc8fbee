/** A progress bar with rate and ETA on a TTY; silent in pipes (or when SLIMLM_PROGRESS=0). */
export interface Progress {
  tick(n?: number, status?: string): void;
  done(status?: string): void;
}

export function progressBar(label: string, total: number, unit = 'it', stream: NodeJS.WriteStream = process.stderr): Progress {
  const enabled = stream.isTTY === true && process.env.SLIMLM_PROGRESS !== '0';
  const start = Date.now();
  let current = 0;
  let lastDraw = 0;
  const draw = (status = '', force = false) => {
    if (!enabled) return;
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const secs = (now - start) / 1000;
    const rate = secs > 0 ? current / secs : 0;
    const frac = total > 0 ? Math.min(1, current / total) : 0;
    const width = 24;
    const filled = Math.round(frac * width);
    const eta = rate > 0 && total > 0 ? formatSeconds((total - current) / rate) : '?';
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const line = `${label} ${bar} ${current}/${total} ${rate.toFixed(rate < 10 ? 2 : 0)} ${unit}/s ETA ${eta} ${status}`;
    stream.write(`\r${line.slice(0, (stream.columns || 120) - 1)}\x1b[K`);
  };
  return {
    tick(n = 1, status) { current += n; draw(status); },
    done(status) { if (enabled) { draw(status, true); stream.write('\n'); } },
  };
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
