// Drives Debian's Chromium (through playwright-core, installed by tests/browser/install) against a
// running swarm's dashboard, checks what a person would look for, and takes screenshots.
//
//   node tests/browser/dashboard.mjs '<json>'
//
// The JSON: {"url": coordinator URL, "token": swarm token, "browser_dir": install dir,
//   "screenshots": directory (optional), "timeout_ms": per wait, "steps": [...]} where each step,
//   in order, is one of
//   {"promotions": n}  wait until the chart shows n promoted points and n promotion markers;
//   {"banner": branch}  wait until the approval banner names it;
//   {"approve": branch}  approve it from the banner with the token, then wait for it on the chart;
//   {"new_cycle": true}  wait until a cycle later than the latest one shown appears;
//   {"screenshot": name, "element": css selector (optional)}  into the screenshots directory;
//   {"branch_page": branch, "screenshot_branch": name}  open its page in a second tab;
//   {"where": {"member": name, "host": host, "lease": bool}}  wait until the members table shows
//     the member on that host (and, with lease, a lease row of that holder on that host).
// The page is opened once: a reload or a navigation fails the run (a mark set at the start must
// still be there at the end).
// Prints one JSON line with what it saw; exits 1 with the reason when a check fails.
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const opts = JSON.parse(process.argv[2] || "{}");
const require = createRequire(join(opts.browser_dir, "package.json"));
const { chromium } = require("playwright-core");
const timeout = opts.timeout_ms || 60000;
const seen = {};
const profile = mkdtempSync(join(tmpdir(), "ratchet-chromium-"));

const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.RATCHET_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
let failed = null;
try {
  const page = browser.pages()[0] || (await browser.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${opts.url.replace(/\/$/, "")}/ui?token=${opts.token}`);
  await page.waitForSelector("#conn.live", { timeout });
  seen.url = page.url();
  seen.token_in_address = page.url().includes("token=");
  // A reload or a navigation would lose this mark.
  await page.evaluate(() => { window.__ratchetMark = "set-once"; });

  for (const step of opts.steps || []) {
    if (step.promotions) {
      const n = step.promotions;
      await page.waitForFunction((n) => document.querySelectorAll('#chart .pt[data-verdict="PROMOTED"]').length >= n
        && document.querySelectorAll("#chart .promotion").length >= n, n, { timeout });
      seen.promoted_points = await page.locator('#chart .pt[data-verdict="PROMOTED"]').count();
      seen.promotion_markers = await page.locator("#chart .promotion").count();
      seen.points = await page.locator("#chart .pt").count();
      seen.chart_branches = await page.$$eval("#chart .promotion", (els) => els.map((e) => e.getAttribute("data-branch")));
    }
    if (step.banner) {
      await page.waitForSelector(`#banner.on [data-branch="${step.banner}"]`, { timeout });
      seen.banner = await page.locator("#banner").innerText();
      seen.awaiting_points = await page.locator('#chart .pt[data-verdict="AWAITING"]').count();
    }
    if (step.approve) {
      await page.fill("#token", opts.token);
      await page.click(`#banner [data-branch="${step.approve}"] button.approve`);
      await page.waitForFunction(() => /promoted/.test(document.getElementById("action-result").textContent), null, { timeout });
      seen.action_result = await page.locator("#action-result").innerText();
      await page.waitForSelector(`#chart .pt[data-verdict="PROMOTED"][data-branch="${step.approve}"]`, { timeout });
      seen.approved_on_chart = true;
    }
    if (step.new_cycle) {
      const cycleNow = () => page.evaluate(() => Math.max(0, ...[...document.querySelectorAll("[data-cycle]")].map((e) => Number(e.getAttribute("data-cycle")))));
      const first = await cycleNow();
      await page.waitForFunction((first) => [...document.querySelectorAll("[data-cycle]")].some((e) => Number(e.getAttribute("data-cycle")) > first), first, { timeout });
      seen.first_cycle = first;
      seen.later_cycle = await cycleNow();
      seen.log_lines = await page.evaluate(() => document.getElementById("log").textContent.split("\n").filter(Boolean).length);
    }
    if (step.where) {
      const w = step.where;
      const cell = `#members tr[data-member="${w.member}"] td.where[data-host="${w.host}"]`;
      await page.waitForSelector(cell, { timeout });
      seen.member_where = await page.locator(cell).innerText();
      if (w.lease) {
        const lease = `#leases td.where[data-holder="${w.member}"][data-host="${w.host}"]`;
        await page.waitForSelector(lease, { timeout });
        seen.lease_where = await page.locator(lease).innerText();
      }
      seen.members = await page.$$eval("#members tr[data-member]", (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent.trim()).join(" ").replace(/\s+/g, " ")));
    }
    if (step.screenshot && opts.screenshots) {
      const path = join(opts.screenshots, step.screenshot + ".png");
      if (step.element) await page.locator(step.element).screenshot({ path });
      else await page.screenshot({ path, fullPage: true });
    }
    if (step.branch_page) {
      const p2 = await browser.newPage();
      await p2.goto(`${opts.url.replace(/\/$/, "")}/ui/branch/${step.branch_page}`);
      seen.branch_page = (await p2.locator("body").innerText()).slice(0, 2000);
      if (opts.screenshots && step.screenshot_branch) await p2.screenshot({ path: join(opts.screenshots, step.screenshot_branch + ".png"), fullPage: true });
      await p2.close();
    }
  }
  seen.mark_kept = await page.evaluate(() => window.__ratchetMark === "set-once");
  seen.navigations = await page.evaluate(() => performance.getEntriesByType("navigation").length);
  seen.page_errors = errors;
  if (!seen.mark_kept) failed = "the page was reloaded (its mark is gone)";
  if (errors.length) failed = "the page's script failed: " + errors.join("; ");
} catch (e) {
  failed = String(e && e.message ? e.message.split("\n")[0] : e);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify({ ok: !failed, failed, seen }));
process.exit(failed ? 1 : 0);
