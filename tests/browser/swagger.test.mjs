// Swagger UI at /docs, driven in Debian's Chromium as a developer would use it: Authorize, sign
// in, consent, back on /docs, "Try it out" on /api/hello -> 200 "Hello, there!!".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { adminPassword, chromiumArgs, chromiumPath, screenshotPath, startServer } from './server.mjs';

const password = adminPassword;

test('Swagger UI signs in with PKCE and calls /api/hello', async (t) => {
  const { child, base } = await startServer();
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: chromiumArgs,
  });
  t.after(async () => {
    await browser.close();
    child.kill('SIGTERM');
  });
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  await page.goto(`${base}/docs`);

  // The Authorize dialog: the oauth2 scheme is preconfigured with client swagger-ui and scope read.
  await page.locator('.scheme-container button.authorize').click();
  const oauth2 = page.locator('.auth-container').filter({ hasText: 'authorizationCode' });
  await assert.doesNotReject(oauth2.waitFor());
  const popupOpened = page.waitForEvent('popup');
  await oauth2.locator('button.authorize').click();
  const popup = await popupOpened;

  // The sign-in window: login, then consent.
  await popup.waitForSelector('input[name=username]');
  await popup.fill('input[name=username]', 'admin');
  await popup.fill('input[name=password]', password);
  await popup.click('button[type=submit]');
  await popup.waitForSelector('button[name=allow]');
  assert.match(await popup.textContent('h1'), /Swagger UI/);
  await Promise.all([popup.waitForEvent('close'), popup.click('button[name=allow]')]);

  // Back on /docs: signed in.
  // (Swagger UI labels this button "Remove authorization" for screen readers.)
  await page.locator('.auth-container button', { hasText: 'Logout' }).waitFor();
  await page.locator('.modal-ux button.close-modal').click();

  // Try /api/hello.
  const operation = page.locator('#operations-Resources-hello');
  await operation.locator('.opblock-summary').click();
  await operation.locator('button', { hasText: 'Try it out' }).click();
  await operation.locator('button', { hasText: 'Execute' }).click();
  const status = operation.locator('.live-responses-table tbody .response-col_status').first();
  await status.waitFor();
  assert.equal((await status.textContent()).trim(), '200');
  const body = await operation.locator('.live-responses-table tbody .response-col_description pre').first().textContent();
  assert.match(body, /Hello, there!!/);

  // The README's screenshot: rewritten only on request, so test runs leave the tree clean.
  const screenshot = screenshotPath('swagger-ui.png');
  await page.setViewportSize({ width: 1000, height: 820 });
  await operation.evaluate((element) => element.scrollIntoView());
  await page.screenshot({ path: screenshot });
});
