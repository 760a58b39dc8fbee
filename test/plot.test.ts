import { test } from 'node:test';
import assert from 'node:assert/strict';
import { svgChart } from '../src/report/plot.js';

test('svgChart draws one path per line series and labelled dots for scatter plots', () => {
  const svg = svgChart([{ name: 'train', points: [[1, 4], [2, 3], [3, 2.5]] }, { name: 'val <kd>', points: [[1, 4.2], [3, 2.9]] }],
    { title: 'loss', xLabel: 'step', yLabel: 'loss' });
  assert.equal(svg.match(/<path /g)?.length, 2);
  assert.match(svg, /val &lt;kd&gt;/);
  const scatter = svgChart([{ name: 'models', points: [[1e6, 10], [1e7, 5]] }],
    { title: 'quality vs size', xLabel: 'bytes', yLabel: 'ppl', kind: 'scatter', logX: true, pointLabels: [['int4', 'fp32']] });
  assert.equal(scatter.match(/<circle /g)?.length, 2);
  assert.match(scatter, />int4</);
  assert.throws(() => svgChart([{ name: 'x', points: [[1, NaN]] }], { title: 't', xLabel: 'x', yLabel: 'y' }), /no finite points/);
});
