// What every OHIF check script shares: the job file (argv: JOB.json RESULT.json), playwright-core's Chromium with
// flags for a headless, offline run, a hard deadline for the whole process, and the loop that runs each case in
// turn and writes the results whatever happens (the browser is closed in every case).
'use strict';
const fs = require('fs');
const path = require('path');

const [jobPath, resultPath] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobPath, 'utf8'));
const T = job.timeouts || {};
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

// runCase(browser, case) -> result object (with at least {name, errors}); results land in RESULT.json
async function runCases(name, runCase) {
  const hardDeadline = setTimeout(() => { console.error(`${name}: hard deadline`); process.exit(3); },
    (T.total_s || 600) * 1000);
  const { chromium } = require(path.join(job.node_modules, 'playwright-core'));
  let browser;
  const results = [];
  try {
    // playwright gives each launch a fresh, empty profile (user data dir) and removes it on close
    browser = await chromium.launch({ executablePath: job.chromium, headless: true, timeout: 60000, args: FLAGS });
    for (const c of job.cases) results.push(await runCase(browser, c));
  } catch (e) {
    results.push({ name: 'browser', errors: [String(e.message || e).slice(0, 400)] });
  } finally {
    if (browser) await browser.close().catch(() => {});
    fs.writeFileSync(resultPath, JSON.stringify(results));
    clearTimeout(hardDeadline);
  }
}

// A fresh browser context and page for one case, its console errors and page errors recorded in ``out``;
// ``init`` (optional) runs in the page before OHIF does.
async function newPage(browser, out, viewport, init) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(() => {
    localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
  });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.setDefaultTimeout((T.step_s || 60) * 1000);
  page.on('console', m => { if (m.type() === 'error') out.console.push(m.text().slice(0, 400)); });
  page.on('pageerror', e => out.errors.push(String(e.message).slice(0, 400)));
  return { context, page };
}

// Open ``study`` in the viewer and wait until OHIF lists the series (``modality``, ``seriesNumber``) and has
// drawn the first image of the study in its viewport.
async function showStudy(page, study, modality, seriesNumber) {
  await page.goto(`${job.base_url}/viewer?StudyInstanceUIDs=${study}`, { timeout: (T.load_s || 90) * 1000 });
  await page.waitForFunction(([m, sn]) => window.services && window.services.displaySetService.getActiveDisplaySets()
    .some(d => d.Modality === m && String(d.SeriesNumber) === sn), [modality, String(seriesNumber)],
  { timeout: (T.load_s || 90) * 1000 });
  await page.waitForFunction(() => {
    const vp = window.cornerstone.getEnabledElements()[0]?.viewport;
    return vp && vp.getCurrentImageId && vp.getCurrentImageId() && vp.getImageData && vp.getImageData();
  }, null, { timeout: (T.load_s || 90) * 1000 });
}

module.exports = { job, T, runCases, newPage, showStudy };
