// The HTML pages in Chromium, as a user of the applications pages would use them: sign in,
// register an application, edit it, rotate its secret, authorize it, see and revoke that grant,
// and delete the application. Also: every page's headers, and every input has a label.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { adminPassword, chromiumArgs, chromiumPath, screenshotPath, startServer } from './server.mjs';

const callback = 'http://127.0.0.1:9/callback';

async function checkPage(page, response) {
  const headers = response.headers();
  assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(headers['referrer-policy'], 'no-referrer');
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input:not([type=hidden]), textarea, select')]
    .filter((input) => input.labels.length === 0).map((input) => input.name));
  assert.deepEqual(unlabelled, [], `inputs without a label on ${page.url()}`);
}

test('applications and authorized tokens pages work in a browser', async (t) => {
  const { child, base } = await startServer();
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  t.after(async () => {
    await browser.close();
    child.kill('SIGTERM');
  });
  const page = await browser.newPage({ viewport: { width: 900, height: 760 } });

  // Sign in; the applications page asked for it and comes back.
  let response = await page.goto(`${base}/o/applications/`);
  assert.match(page.url(), /\/login\?next=/);
  await checkPage(page, response);
  await page.screenshot({ path: screenshotPath('login.png') });
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', adminPassword);
  await Promise.all([page.waitForURL(`${base}/o/applications/`), page.click('button[type=submit]')]);

  // Register.
  response = await page.goto(`${base}/o/applications/register/`);
  await checkPage(page, response);
  await page.fill('#name', 'Browser App');
  await page.fill('#redirect_uris', callback);
  await page.fill('#scope', 'openid read');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshotPath('application-form.png') });
  await page.click('button[type=submit]');
  const clientId = (await page.textContent('#client_id')).trim();
  const firstSecret = (await page.textContent('#client_secret')).trim();
  assert.ok(clientId && firstSecret.length === 43);
  await page.screenshot({ path: screenshotPath('application.png') });

  // Edit.
  await page.click('text=Edit');
  await page.fill('#name', 'Browser App (renamed)');
  await Promise.all([page.waitForURL(`${base}/o/applications/${clientId}/`), page.click('button[type=submit]')]);
  assert.equal((await page.textContent('h1')).trim(), 'Browser App (renamed)');
  assert.equal(await page.locator('#client_secret').count(), 0, 'the secret is not shown again');

  // Rotate the secret.
  await page.click('button:has-text("New secret")');
  const secret = (await page.textContent('#client_secret')).trim();
  assert.notEqual(secret, firstSecret);

  // Authorize it: the consent page, then the redirect (intercepted) carries a code.
  let redirected;
  await page.route('http://127.0.0.1:9/**', (route) => {
    redirected = route.request().url();
    return route.fulfill({ status: 200, body: 'ok' });
  });
  response = await page.goto(`${base}/o/authorize?response_type=code&client_id=${clientId}` +
    `&redirect_uri=${encodeURIComponent(callback)}&scope=openid%20read&state=s1`);
  await checkPage(page, response);
  await page.screenshot({ path: screenshotPath('consent.png') });
  await page.click('button[name=allow]');
  await page.waitForURL(/127\.0\.0\.1:9/);
  const code = new URL(redirected).searchParams.get('code');
  const basic = 'Basic ' + Buffer.from(`${clientId}:${secret}`).toString('base64');
  const exchange = await fetch(`${base}/o/token`, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: callback }),
  });
  assert.equal(exchange.status, 200);
  const tokens = await exchange.json();
  assert.ok(tokens.refresh_token && tokens.id_token);

  // The grant is listed; revoking it ends the refresh token.
  response = await page.goto(`${base}/o/authorized_tokens/`);
  await checkPage(page, response);
  assert.match(await page.textContent('main'), /Browser App \(renamed\)/);
  await page.screenshot({ path: screenshotPath('authorized-tokens.png') });
  await page.click('button:has-text("Revoke")');
  await page.waitForURL(`${base}/o/authorized_tokens/`);
  assert.match(await page.textContent('main'), /not authorized any application/);
  const refresh = await fetch(`${base}/o/token`, {
    method: 'POST',
    headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token }),
  });
  assert.equal(refresh.status, 400);
  assert.equal((await refresh.json()).error, 'invalid_grant');

  // Delete the application.
  await page.goto(`${base}/o/applications/${clientId}/`);
  await page.click('text=Delete');
  await Promise.all([page.waitForURL(`${base}/o/applications/`), page.click('button:has-text("Delete")')]);
  assert.doesNotMatch(await page.textContent('main'), /Browser App/);
  await page.screenshot({ path: screenshotPath('applications.png') });

  // Change the password: a second browser signed in as the same user is signed out.
  const other = await browser.newPage();
  await other.goto(`${base}/login`);
  await other.fill('input[name=username]', 'admin');
  await other.fill('input[name=password]', adminPassword);
  await Promise.all([other.waitForURL(`${base}/`), other.click('button[type=submit]')]);
  await page.goto(`${base}/`);
  await page.click('text=Your password');
  await page.waitForURL(`${base}/account/password`);
  response = await page.reload();
  await checkPage(page, response);
  await page.fill('#current_password', adminPassword);
  await page.fill('#new_password', 'a new passphrase for the admin');
  await page.fill('#new_password_again', 'a new passphrase for the admin');
  await page.screenshot({ path: screenshotPath('account-password.png') });
  await page.click('button:has-text("Change password")');
  assert.match(await page.textContent('h1'), /Password changed/);
  await page.goto(`${base}/o/applications/`);
  assert.equal(page.url(), `${base}/o/applications/`, 'this browser stays signed in');
  await other.goto(`${base}/o/applications/`);
  assert.match(other.url(), /\/login\?next=/, 'the other browser is signed out');
});
