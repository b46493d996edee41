// Opens a study in a static OHIF v3 in headless Chromium (playwright-core) as a reader does: double-clicks the
// measurement SR, answers "Yes" to tracking, then double-clicks the review Secondary Capture series and shows its
// measurement table. Reports what OHIF made of the SR (its SR view and its measurement service), every
// notification and page error, the measurement panel's text, and screenshots in each case's out folder.
// Usage: node ohif_sr_check.cjs JOB.json RESULT.json   (JOB: {node_modules, chromium, base_url, cases: [...]})
// Every wait is bounded; the browser is closed whatever happens; the process exits by a hard deadline.
'use strict';
const fs = require('fs');
const path = require('path');

const { T, runCases, newPage, showStudy } = require('./ohif_runner.cjs');
// where OHIF 3.12 / 3.13 keep the measurement panel (the first one the panel service knows is opened)
const MEASUREMENT_PANELS = ['@ohif/extension-measurement-tracking.panelModule.trackedMeasurements',
  '@ohif/extension-cornerstone.panelModule.panelMeasurement',
  '@ohif/extension-default.panelModule.measurements'];

// In the page: every notification OHIF shows (its toasts) is recorded in window.__notifications.
function recordNotifications() {
  const ui = window.services.uiNotificationService;
  window.__notifications = window.__notifications || [];
  if (ui.__recorded) return;
  const show = ui.show.bind(ui);
  ui.show = (n) => {
    window.__notifications.push({ type: n && n.type, title: String(n && n.title || ''),
      message: String(n && n.message || '').slice(0, 400) });
    return show(n);
  };
  ui.__recorded = true;
}

// In the page, before OHIF starts: every toast OHIF draws (sonner: [data-sonner-toast], its kind in data-type),
// whatever raised it, is recorded in window.__toasts.
function recordToasts() {
  window.__toasts = [];
  new MutationObserver(() => {
    document.querySelectorAll('[data-sonner-toast]').forEach(t => {
      if (t.__seen) return;
      t.__seen = true;
      window.__toasts.push({ type: t.getAttribute('data-type'), text: (t.innerText || '').slice(0, 400) });
    });
  }).observe(document, { childList: true, subtree: true });
}

// In the page: the SR display set as OHIF parsed it (its SR view draws these).
function readSrView(srSeries) {
  const ds = window.services.displaySetService.getActiveDisplaySets()
    .find(d => d.Modality === 'SR' && String(d.SeriesNumber) === srSeries);
  if (!ds) return { error: 'no SR display set' };
  return { isLoaded: !!ds.isLoaded, isRehydratable: !!ds.isRehydratable,
    measurements: (ds.measurements || []).map(m => ({ loaded: !!m.loaded, tracking: m.TrackingIdentifier,
      labels: (m.labels || []).map(l => [l.label, l.value]),
      coords: (m.coords || []).map(c => c && c.GraphicType) })) };
}

// In the page: what the measurement service holds after tracking.
function readTracked() {
  return window.services.measurementService.getMeasurements().map(m => {
    const stats = Object.values((m.data) || {})[0] || {};
    const ref = m.referencedImageId || '';
    const sop = (/instances\/([0-9.]+)\/frames/.exec(ref) || /objectUID=([0-9.]+)/.exec(ref) || [])[1] || null;
    return { label: m.label, toolName: m.toolName, length: stats.length, unit: stats.unit, points: m.points, sop };
  });
}

async function openSeries(page, seriesNumber) {
  await page.getByText(`S:${seriesNumber}`, { exact: true }).first().dblclick();
}

async function runCase(browser, c) {
  const out = { name: c.name, errors: [], console: [], timings: {} };
  const t0 = Date.now();
  const lap = (k) => { out.timings[k] = (Date.now() - t0) / 1000; };
  fs.mkdirSync(c.out, { recursive: true });
  const { context, page } = await newPage(browser, out, { width: 1400, height: 950 }, recordToasts);
  try {
    await showStudy(page, c.study, 'SR', c.sr_series_number);
    await page.evaluate(recordNotifications);
    lap('study_shown');
    // the SR, as a reader opens it
    await openSeries(page, c.sr_series_number);
    await page.waitForFunction((sn) => {
      const ds = window.services.displaySetService.getActiveDisplaySets()
        .find(d => d.Modality === 'SR' && String(d.SeriesNumber) === sn);
      return ds && ds.isLoaded && (ds.measurements || []).length > 0 && ds.measurements.every(m => m.loaded);
    }, String(c.sr_series_number), { timeout: (T.sr_s || 45) * 1000 }).catch(() => {});   // bounded: reported
    await page.waitForTimeout(1500);
    out.srView = await page.evaluate(readSrView, String(c.sr_series_number));
    await page.screenshot({ path: path.join(c.out, 'sr-view.png') });
    lap('sr_view');
    // "Do you want to continue tracking measurements for this study?" -> Yes
    const yes = page.getByRole('button', { name: 'Yes' });
    await yes.waitFor({ state: 'visible', timeout: (T.sr_s || 45) * 1000 });
    await yes.click();
    await page.waitForFunction((n) => window.services.measurementService.getMeasurements().length >= n,
      c.expected_tracked, { timeout: (T.sr_s || 45) * 1000 }).catch(() => {});          // bounded: reported
    await page.waitForTimeout(1500);
    out.tracked = await page.evaluate(readTracked);
    out.panel = await page.evaluate((ids) => {
      const ps = window.services.panelService;
      for (const id of ids) {
        try { ps.activatePanel(id, true); return id; } catch (e) { /* not in this version */ }
      }
      return null;
    }, MEASUREMENT_PANELS);
    await page.waitForFunction((labels) => labels.every(l => document.body.innerText.includes(l)),
      c.panel_labels, { timeout: 15000 }).catch(() => {});                                  // bounded: reported
    out.panelText = await page.locator('body').innerText({ timeout: 10000 });
    await page.screenshot({ path: path.join(c.out, 'tracked.png') });
    lap('tracked');
    // the review Secondary Capture series: its second image is the measurement table
    await openSeries(page, c.sc_series_number);
    await page.waitForFunction((sop) => {
      const vp = window.cornerstone.getEnabledElements()[0]?.viewport;
      return vp && vp.getImageIds && vp.getImageIds().some(id => id.includes(sop));
    }, c.table_sop, { timeout: (T.sr_s || 45) * 1000 });
    out.table = await page.evaluate(async (sop) => {
      const vp = window.cornerstone.getEnabledElements()[0].viewport;
      const k = vp.getImageIds().findIndex(id => id.includes(sop));
      await vp.setImageIdIndex(k);
      vp.render();
      return { index: k, images: vp.getImageIds().length, viewportId: vp.id };
    }, c.table_sop);
    await page.waitForFunction((sop) => {
      const vp = window.cornerstone.getEnabledElements()[0].viewport;
      return (vp.getCurrentImageId() || '').includes(sop) && vp.getImageData && vp.getImageData();
    }, c.table_sop, { timeout: 30000 });
    await page.waitForTimeout(1500);
    out.table.shown = await page.evaluate(() => window.cornerstone.getEnabledElements()[0].viewport.getCurrentImageId());
    await page.locator(`[data-viewport-uid="${out.table.viewportId}"] canvas`).first()
      .screenshot({ path: path.join(c.out, 'table.png') });
    await page.screenshot({ path: path.join(c.out, 'table-viewer.png') });
    lap('table');
  } catch (e) {
    out.errors.push(String(e.message || e).split('\n')[0].slice(0, 400));
    try { await page.screenshot({ path: path.join(c.out, 'failure.png'), timeout: 10000 }); } catch (_) { /* none */ }
  } finally {
    try {
      out.notifications = await page.evaluate(() => window.__notifications || []);
      out.toasts = await page.evaluate(() => window.__toasts || []);
      out.somethingWentWrong = (await page.locator('body').innerText({ timeout: 5000 })).includes('Something went wrong');
    } catch (_) { /* page gone: errors say why */ }
    await context.close().catch(() => {});
  }
  return out;
}

runCases('ohif_sr_check', runCase);
