// Opens studies in a static OHIF v3 in headless Chromium (playwright-core) and reports what OHIF made of
// each DICOM SEG: its in-memory labelmap (per referenced source instance), segment labels in the panel,
// and overlay pixels on the canvas with the segmentation shown and hidden. Screenshots in each case's out.
// Usage: node ohif_check.cjs JOB.json RESULT.json   (JOB: {node_modules, chromium, base_url, cases: [...]})
// Every wait is bounded; the browser is closed whatever happens; the process exits by a hard deadline.
'use strict';
const fs = require('fs');
const path = require('path');

const { T, runCases, newPage, showStudy } = require('./ohif_runner.cjs');

// In the page: the segmentation OHIF holds, as segment labels and one label array per source instance.
function readSegmentation() {
  const { segmentationService } = window.services;
  const cs = window.cornerstone;
  const segs = segmentationService.getSegmentations();
  if (segs.length !== 1) return { error: `${segs.length} segmentations in OHIF` };
  const s = segs[0];
  const viewportId = window.services.viewportGridService.getActiveViewportId();
  const segments = Object.values(s.segments).filter(Boolean).map(x => [x.segmentIndex, x.label,
    Array.from(segmentationService.getSegmentColor(viewportId, s.segmentationId, x.segmentIndex) || [])]);
  const rep = s.representationData.Labelmap || {};
  const imageIds = rep.imageIds || [];
  const slices = [];
  const b64 = (arr) => {
    const u8 = new Uint8Array(arr.length);
    let over = 0;
    for (let i = 0; i < arr.length; i++) { const v = arr[i]; if (v > 255) over++; u8[i] = v; }
    let bin = '';
    for (let i = 0; i < u8.length; i += 0x8000) bin += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return [btoa(bin), over];
  };
  for (const id of imageIds) {
    const img = cs.cache.getImage(id);
    if (!img) { slices.push({ imageId: id, error: 'not in cache' }); continue; }
    const ref = img.referencedImageId || '';
    const m = /instances\/([0-9.]+)\/frames/.exec(ref) || /objectUID=([0-9.]+)/.exec(ref);
    const data = img.voxelManager ? img.voxelManager.getScalarData() : img.getPixelData();
    const [data64, over] = b64(data);
    slices.push({ sop: m ? m[1] : null, rows: img.rows, columns: img.columns, data: data64, over255: over });
  }
  return { segmentationId: s.segmentationId, label: s.label, segments, slices, volumeId: rep.volumeId || null };
}

// In the page: which canvas pixels changed between two PNG screenshots of the viewport, and how many of them
// lie over a labelled pixel of the displayed slice (canvas -> world -> image index of the labelmap).
async function compareCanvas({ shownPng, hiddenPng, viewportId, expected }) {
  const load = (b64) => new Promise((ok, bad) => { const im = new Image(); im.onload = () => ok(im); im.onerror = bad;
    im.src = 'data:image/png;base64,' + b64; });
  const [a, b] = await Promise.all([load(shownPng), load(hiddenPng)]);
  const px = (im) => { const c = document.createElement('canvas'); c.width = im.width; c.height = im.height;
    const g = c.getContext('2d'); g.drawImage(im, 0, 0); return g.getImageData(0, 0, im.width, im.height).data; };
  const pa = px(a), pb = px(b);
  const cs = window.cornerstone;
  const vp = cs.getEnabledElementByViewportId(viewportId).viewport;
  const current = vp.getCurrentImageId();
  const img = cs.cache.getImage(current);
  // our label map of the displayed source instance (not OHIF's: the canvas is checked against the truth)
  const labels = Uint8Array.from(atob(expected.data), ch => ch.charCodeAt(0));
  if (!current.includes(expected.sop) || labels.length !== img.rows * img.columns) {
    return { error: `displayed ${current} is not ${expected.sop} or has another size` };
  }
  const canvas = vp.getCanvas ? vp.getCanvas() : vp.canvas;
  const rect = canvas.getBoundingClientRect();
  const sx = a.width / rect.width, sy = a.height / rect.height;
  const ipp = img.imagePlaneModule || cs.metaData.get('imagePlaneModule', current);
  const rowDir = ipp.rowCosines, colDir = ipp.columnCosines, origin = ipp.imagePositionPatient;
  const [dr, dc] = [ipp.rowPixelSpacing, ipp.columnPixelSpacing];
  // canvasToWorld is affine: map three canvas points, then step through the pixels linearly
  const toIndex = (x, y) => {
    const w = vp.canvasToWorld([x / sx, y / sy]);
    const d = [w[0] - origin[0], w[1] - origin[1], w[2] - origin[2]];
    return [(d[0] * colDir[0] + d[1] * colDir[1] + d[2] * colDir[2]) / dr,
            (d[0] * rowDir[0] + d[1] * rowDir[1] + d[2] * rowDir[2]) / dc];
  };
  const p0 = toIndex(0.5, 0.5), px1 = toIndex(1.5, 0.5), py1 = toIndex(0.5, 1.5);
  const ex = [px1[0] - p0[0], px1[1] - p0[1]], ey = [py1[0] - p0[0], py1[1] - p0[1]];
  let changed = 0, changedOnLabel = 0, onLabel = 0, onLabelChanged = 0;
  for (let y = 0; y < a.height; y++) {
    for (let x = 0; x < a.width; x++) {
      const k = 4 * (y * a.width + x);
      const diff = Math.abs(pa[k] - pb[k]) + Math.abs(pa[k + 1] - pb[k + 1]) + Math.abs(pa[k + 2] - pb[k + 2]) > 24;
      const row = Math.round(p0[0] + x * ex[0] + y * ey[0]), col = Math.round(p0[1] + x * ex[1] + y * ey[1]);
      const inside = row >= 0 && col >= 0 && row < img.rows && col < img.columns;
      const labelled = inside && labels[row * img.columns + col] > 0;
      if (diff) { changed++; if (labelled) changedOnLabel++; }
      if (labelled) { onLabel++; if (diff) onLabelChanged++; }
    }
  }
  return { changed, changedOnLabel, onLabel, onLabelChanged, width: a.width, height: a.height,
           imageIndex: vp.getCurrentImageIdIndex() };
}

async function runCase(browser, c) {
  const out = { name: c.name, errors: [], console: [], timings: {} };
  const t0 = Date.now();
  const lap = (k) => { out.timings[k] = (Date.now() - t0) / 1000; };
  fs.mkdirSync(c.out, { recursive: true });
  const { context, page } = await newPage(browser, out, { width: 1280, height: 900 });
  try {
    // the source series is drawn before the SEG is opened
    await showStudy(page, c.study, 'SEG', c.seg_series_number);
    lap('study_shown');
    await page.getByText(`S:${c.seg_series_number}`, { exact: true }).first().dblclick();
    const yes = page.getByRole('button', { name: 'Yes' });
    await yes.waitFor({ state: 'visible', timeout: (T.seg_s || 60) * 1000 });
    lap('seg_prompt');
    await yes.click();
    await page.waitForFunction(() => {
      const s = window.services.segmentationService.getSegmentations();
      return s.length === 1 && (s[0].representationData.Labelmap?.imageIds?.length || 0) > 0;
    }, null, { timeout: (T.seg_s || 60) * 1000 });
    lap('seg_loaded');
    await page.waitForTimeout(1000);
    const state = await page.evaluate(readSegmentation);
    Object.assign(out, state);
    // the segmentation panel lists our segment labels
    await page.evaluate(() => window.services.panelService.activatePanel(
      '@ohif/extension-cornerstone.panelModule.panelSegmentation', true));
    await page.waitForFunction((labels) => labels.every(l => document.body.innerText.includes(l)), c.labels,
      { timeout: 15000 }).catch(() => {});     // bounded: the test reports what is missing
    out.panelText = await page.locator('body').innerText({ timeout: 10000 });
    // go to the slice named by the caller, shown vs hidden, screenshots
    const viewportId = await page.evaluate(() => window.services.viewportGridService.getActiveViewportId());
    await page.evaluate(async ({ viewportId, sop }) => {
      const vp = window.cornerstone.getEnabledElementByViewportId(viewportId).viewport;
      const ids = vp.getImageIds();
      const k = ids.findIndex(id => id.includes(sop));
      if (k >= 0) await vp.setImageIdIndex(k);
      vp.render();
    }, { viewportId, sop: c.show_sop });
    await page.waitForTimeout(1000);
    const el = page.locator(`[data-viewport-uid="${viewportId}"] canvas`).first();
    await page.screenshot({ path: path.join(c.out, 'viewer.png') });
    const shown = await el.screenshot({ path: path.join(c.out, 'overlay-shown.png') });
    const segId = out.segmentationId;
    await page.evaluate(({ segId }) => window.commandsManager.runCommand('toggleSegmentationVisibility',
      { segmentationId: segId, type: 'Labelmap' }), { segId });
    await page.waitForTimeout(1000);
    const hidden = await el.screenshot({ path: path.join(c.out, 'overlay-hidden.png') });
    out.canvas = await page.evaluate(compareCanvas, { shownPng: shown.toString('base64'),
      hiddenPng: hidden.toString('base64'), viewportId, expected: { sop: c.show_sop, data: c.show_labels } });
    lap('done');
  } catch (e) {
    out.errors.push(String(e.message || e).split('\n')[0].slice(0, 400));
    try { await page.screenshot({ path: path.join(c.out, 'failure.png'), timeout: 10000 }); } catch (_) { /* none */ }
  } finally {
    await context.close().catch(() => {});
  }
  return out;
}

runCases('ohif_check', runCase);
