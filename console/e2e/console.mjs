// The console end to end in headless Chromium (playwright-core driving Debian's chromium):
// sign up, submit, watch it succeed, see a failure go dead, requeue it as an admin; an axe-core
// check of every page (no serious or critical violations) and a screenshot of each.
//
// Run by tests/tests/console_browser.rs, which starts the stack and passes:
//   CONSOLE_URL, SIMULATOR_URL, ADMIN_EMAIL, ADMIN_PASSWORD, SCREENSHOTS, CHROMIUM.
// Prints one JSON line of results last; exits non-zero on the first failed expectation.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("CONSOLE_URL");
const simulator = env("SIMULATOR_URL");
const shots = env("SCREENSHOTS");
mkdirSync(shots, { recursive: true });
const results = { pages: {}, violations: {}, cspErrors: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

async function setFaults(plan) {
  const answer = await fetch(`${simulator}/_simulator/faults`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(plan),
  });
  if (!answer.ok) throw new Error(`setting faults: ${answer.status} ${await answer.text()}`);
}

async function accessible(page, name) {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const found = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const report = await axe.run(document, { resultTypes: ["violations"] });
    return report.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  results.violations[name] = found;
  const serious = found.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (serious.length) throw new Error(`${name}: serious accessibility violations: ${JSON.stringify(serious)}`);
}

async function shoot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

try {
  // 1. Under the real CSP (no bypass): the shell loads, renders, and breaks no rule.
  {
    const strict = await browser.newContext();
    const page = await strict.newPage();
    page.on("console", (m) => {
      if (/Content Security Policy|Refused to/.test(m.text())) results.cspErrors.push(m.text());
    });
    const started = Date.now();
    await page.goto(`${base}/`, { waitUntil: "load" });
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    results.firstRenderMs = Date.now() - started;
    results.pages.login = await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      return { domContentLoadedMs: nav.domContentLoadedEventEnd, loadMs: nav.loadEventEnd, transferBytes: performance.getEntriesByType("resource").reduce((s, r) => s + r.transferSize, nav.transferSize) };
    });
    if (results.cspErrors.length) throw new Error(`CSP violations: ${results.cspErrors.join("; ")}`);
    await strict.close();
  }

  // axe needs its script injected, which the CSP rightly refuses: the rest bypasses it.
  const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);

  // 2. Sign up and in.
  await page.goto(`${base}/`);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await accessible(page, "sign-in");
  await shoot(page, "1-sign-in");
  const email = `browser-${Date.now()}@example.com`;
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByRole("heading", { name: "Requests" }).waitFor();

  // 3. The JSON editor refuses what is not JSON.
  const payload = page.getByLabel("Payload");
  await payload.fill("{not json");
  await page.getByText(/^Not JSON/).waitFor();
  if (!(await page.getByRole("button", { name: "Submit" }).isDisabled())) throw new Error("Submit stayed enabled on bad JSON");
  await payload.fill('{"from": "the browser"}');
  await page.getByText("Valid JSON").waitFor();

  // 4. Submit ASYNC and watch it succeed live.
  await page.getByLabel("Kind", { exact: true }).first().selectOption("echo");
  await page.getByRole("button", { name: "Submit" }).click();
  const firstRow = page.locator("tbody tr").first();
  await firstRow.locator(".badge-succeeded").waitFor();
  await accessible(page, "requests");
  await shoot(page, "2-requests");
  const succeededId = (await firstRow.locator("td a").textContent()).trim();

  // 5. Its timeline.
  await firstRow.locator("td a").click();
  await page.getByRole("heading", { name: /^Request / }).waitFor();
  await page.locator(".timeline li[data-status=succeeded]").waitFor();
  await accessible(page, "request");
  await shoot(page, "3-request");

  // 6. A permanent failure goes dead.
  await setFaults({ errorRate: 1.0, error: { httpStatus: 400, grpcCode: 3 } });
  await page.goto(`${base}/#/requests`);
  await page.getByRole("heading", { name: "Requests" }).waitFor();
  await page.getByLabel("Payload").fill('{"will": "fail"}');
  await page.getByRole("button", { name: "Submit" }).click();
  const deadRow = page.locator("tbody tr").first();
  await deadRow.locator(".badge-dead").waitFor();
  const deadId = (await deadRow.locator("td a").textContent()).trim();
  await setFaults({});
  await shoot(page, "4-dead");

  // 7. The admin requeues it.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await page.getByLabel("Email").fill(env("ADMIN_EMAIL"));
  await page.getByLabel("Password").fill(env("ADMIN_PASSWORD"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("link", { name: "Operations" }).click();
  await page.getByRole("heading", { name: "Operations" }).waitFor();
  await page.locator("svg.chart").waitFor();
  await page.locator("tbody tr", { hasText: "sim-http" }).locator(".badge").waitFor();
  const letter = page.getByLabel(`Select ${deadId}`);
  await letter.waitFor();
  await accessible(page, "operations");
  await shoot(page, "5-operations");
  await letter.check();
  await page.getByRole("button", { name: "Requeue selected" }).click();
  await page.getByText("Requeued 1, skipped 0").waitFor();
  await shoot(page, "6-requeued");

  results.succeededId = succeededId;
  results.deadId = deadId;
  await context.close();
  console.log(JSON.stringify(results));
} catch (error) {
  console.error(String(error?.stack || error));
  console.log(JSON.stringify({ ...results, error: String(error) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
