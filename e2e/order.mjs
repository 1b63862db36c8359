// A customer in headless Chromium: logs in, orders, watches the status reach "delivered" live (no
// reload), and a second customer fails to see the first one's order. Screenshots go to OUT_DIR.
//   node e2e/order.mjs BASE_URL OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const [base, outDir] = process.argv.slice(2);
assert.ok(base && outDir, "usage: node order.mjs BASE_URL OUT_DIR");
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

async function logIn(context, username) {
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.waitForURL("**/login");
  await page.fill("input[name=username]", username);
  await page.click("form[action='/login'] button[type=submit]");
  await page.waitForURL("**/menu");
  return page;
}

try {
  const alice = await logIn(await browser.newContext(), "alice");
  await alice.check("input[name=sauce][value='Tomato']");
  await alice.check("input[name=cheese][value='Mozzarella']");
  await alice.check("input[name=main_topping][value='Pepperoni']");
  await alice.check("input[name=extra_toppings][value='Mushroom']");
  await alice.click("#order-form button[type=submit]");
  await alice.waitForURL(/\/orders\/[0-9a-f]{8}$/);
  const orderUrl = alice.url();

  // From here the page must update itself: count reloads, record every status text shown.
  let navigations = 0;
  alice.on("framenavigated", (frame) => { if (frame === alice.mainFrame()) navigations += 1; });
  await alice.evaluate(() => {
    const el = document.getElementById("status");
    window.__seen = [el.textContent];
    new MutationObserver(() => window.__seen.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
  });
  await alice.waitForFunction(
    () => document.getElementById("status").textContent === "Your pizza was delivered",
    null, { timeout: 90_000 });
  const seen = await alice.evaluate(() => window.__seen);
  const steps = await alice.locator("#timeline li").count();
  await alice.screenshot({ path: `${outDir}/order-delivered.png`, fullPage: true });
  assert.equal(navigations, 0, "the status changed without a reload");
  assert.ok(seen.length >= 2 && seen[0] !== "Your pizza was delivered", `live updates seen: ${JSON.stringify(seen)}`);
  assert.equal(steps, 4, "timeline: received, oven, out for delivery, delivered");
  assert.match(await alice.textContent("dl.details"), /Mushroom/);

  const list = await alice.context().newPage();
  await list.goto(base + "/orders");
  assert.match(await list.textContent("table"), /Your pizza was delivered/);

  // Another customer asks for alice's order: the same answer as for an order that does not exist.
  const mallory = await logIn(await browser.newContext(), "mallory");
  const theirs = await mallory.goto(orderUrl);
  const theirsText = await mallory.textContent("main");
  await mallory.screenshot({ path: `${outDir}/other-customer.png`, fullPage: true });
  const nobody = await mallory.goto(base + "/orders/0000dead");
  assert.equal(theirs.status(), 404);
  assert.equal(nobody.status(), 404);
  assert.equal(theirsText, await mallory.textContent("main"));
  assert.match(theirsText, /Oops! Unknown order/);

  console.log(JSON.stringify({ order: orderUrl, statuses_seen: seen,
    screenshots: [`${outDir}/order-delivered.png`, `${outDir}/other-customer.png`] }));
} finally {
  await browser.close();
}
