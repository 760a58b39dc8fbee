/**
 * Stop-string detection on streamed text. Text is released only once no stop string can start inside it, so a stop
 * string split over several tokens is never streamed in part, and the stop string itself is never released.
 */
export class StopStringBuffer {
  private pending = '';
  private matched: string | null = null;

  constructor(private readonly stops: readonly string[]) {
    for (const s of stops) if (typeof s !== 'string' || s.length === 0) throw new Error('stop strings must be non-empty strings');
  }

  /** The stop string that ended the text, once one has. */
  get stopString(): string | null {
    return this.matched;
  }

  /** Adds decoded text; returns what is safe to emit now and whether a stop string completed. */
  push(delta: string): { text: string; stopped: boolean } {
    if (this.matched !== null) return { text: '', stopped: true };
    const buf = this.pending + delta;
    let at = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > this.matched!.length))) {
        at = i;
        this.matched = s;
      }
    }
    if (at >= 0) {
      this.pending = '';
      return { text: buf.slice(0, at), stopped: true };
    }
    // Hold back the longest suffix that could still grow into a stop string.
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > hold; k--) {
        if (buf.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    this.pending = buf.slice(buf.length - hold);
    return { text: buf.slice(0, buf.length - hold), stopped: false };
  }

  /** Generation ended without a stop string: the held-back text is ordinary output. */
  flush(): string {
    if (this.matched !== null) return '';
    const out = this.pending;
    this.pending = '';
    return out;
  }
}
