/**
 * Dependency-free SVG charts (line charts for training curves, scatter plots for quality vs size).
 * An SVG is an image every browser, GitHub page and Markdown viewer shows; no native renderer needed.
 */
export interface Series {
  name: string;
  points: ReadonlyArray<readonly [number, number]>;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
  logX?: boolean;
  logY?: boolean;
  /** 'line' joins points in x order; 'scatter' draws labelled dots. */
  kind?: 'line' | 'scatter';
  /** Labels drawn beside scatter points, by series and point index. */
  pointLabels?: ReadonlyArray<ReadonlyArray<string>>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];

const escape = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function ticks(lo: number, hi: number, count = 5): number[] {
  if (lo === hi) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / count));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= count) ?? 10 * step;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + nice * 1e-9; v += nice) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number) => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(4))));

export function svgChart(series: readonly Series[], o: ChartOptions): string {
  const W = o.width ?? 720, H = o.height ?? 420, L = 70, R = 160, T = 40, B = 50;
  const tx = (v: number) => (o.logX ? Math.log10(v) : v);
  const ty = (v: number) => (o.logY ? Math.log10(v) : v);
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(tx(x)) && Number.isFinite(ty(y)));
  if (pts.length === 0) throw new Error(`svgChart "${o.title}": no finite points to plot`);
  let [x0, x1] = [Math.min(...pts.map((p) => tx(p[0]))), Math.max(...pts.map((p) => tx(p[0])))];
  let [y0, y1] = [Math.min(...pts.map((p) => ty(p[1]))), Math.max(...pts.map((p) => ty(p[1])))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const px = (v: number) => L + ((tx(v) - x0) / (x1 - x0)) * (W - L - R);
  const py = (v: number) => H - B - ((ty(v) - y0) / (y1 - y0)) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${escape(o.title)}</text>`,
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${escape(o.xLabel)}</text>`,
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${escape(o.yLabel)}</text>`,
    `<rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#888"/>`,
  ];
  const axisTicks = (lo: number, hi: number, log?: boolean) => (log ? ticks(lo, hi).map((e) => 10 ** e) : ticks(lo, hi));
  for (const v of axisTicks(x0, x1, o.logX)) {
    const x = px(v);
    out.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#eee"/><text x="${x}" y="${H - B + 16}" text-anchor="middle">${fmt(v)}</text>`);
  }
  for (const v of axisTicks(y0, y1, o.logY)) {
    const y = py(v);
    out.push(`<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#eee"/><text x="${L - 6}" y="${y + 4}" text-anchor="end">${fmt(v)}</text>`);
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const finite = s.points.filter(([x, y]) => Number.isFinite(tx(x)) && Number.isFinite(ty(y)));
    if ((o.kind ?? 'line') === 'line') {
      const d = [...finite].sort((a, b) => a[0] - b[0]).map(([x, y], j) => `${j ? 'L' : 'M'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join('');
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.8"/>`);
    } else {
      finite.forEach(([x, y], j) => {
        out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="5" fill="${color}"/>`);
        const label = o.pointLabels?.[i]?.[j];
        if (label) out.push(`<text x="${(px(x) + 8).toFixed(1)}" y="${(py(y) - 6).toFixed(1)}">${escape(label)}</text>`);
      });
    }
    const ly = T + 10 + i * 18;
    out.push(`<rect x="${W - R + 12}" y="${ly - 9}" width="14" height="4" fill="${color}"/><text x="${W - R + 32}" y="${ly - 3}">${escape(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
