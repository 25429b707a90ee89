// A relying party on another site POSTs its authorization and logout requests (OpenID Connect
// Core §3.1.2.1, RP-Initiated Logout §2). The session cookie is SameSite=Lax, so the browser
// sends the POST without it; the server answers with a 303 to the same request by GET, which
// the browser follows with the cookie. Only a real browser shows that the cookie comes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';
import { adminPassword, chromiumArgs, chromiumPath, startServer } from './server.mjs';

/// Serves, on another site (localhost is not the issuer's 127.0.0.1), a page that posts
/// `fields` to `action` as soon as it loads.
async function relyingParty(t, action, fields) {
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${value}">`).join('');
  const html = `<!doctype html><form method="post" action="${action}">${inputs}</form>
    <script>document.forms[0].submit()</script>`;
  const server = createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(html);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  return `http://localhost:${server.address().port}/`;
}

test('cross-site POSTed requests see the signed-in user', async (t) => {
  const { child, base } = await startServer();
  const browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  t.after(async () => {
    await browser.close();
    child.kill('SIGTERM');
  });
  const page = await browser.newPage();
  await page.goto(`${base}/login`);
  await page.fill('input[name=username]', 'admin');
  await page.fill('input[name=password]', adminPassword);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);

  // prompt=none answers without a page: login_required if no one were signed in; the admin has
  // not approved swagger-ui yet, so consent_required shows the session was seen.
  const verifier = randomBytes(32).toString('base64url');
  const redirectUri = `${base}/docs/oauth2-redirect.html`;
  const authorize = await relyingParty(t, `${base}/o/authorize`, {
    response_type: 'code',
    client_id: 'swagger-ui',
    redirect_uri: redirectUri,
    scope: 'read',
    state: 'cross-site',
    prompt: 'none',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
  });
  await Promise.all([page.waitForURL((url) => url.href.startsWith(redirectUri)), page.goto(authorize)]);
  const answer = new URL(page.url()).searchParams;
  assert.equal(answer.get('state'), 'cross-site');
  assert.equal(answer.get('error'), 'consent_required', page.url());

  // Without a hint the user is asked before being signed out, not told it happened.
  const logout = await relyingParty(t, `${base}/o/logout`, { state: 'bye' });
  await Promise.all([page.waitForURL((url) => url.pathname === '/o/logout'), page.goto(logout)]);
  assert.equal((await page.textContent('h1')).trim(), 'Sign out?');
  await Promise.all([page.waitForURL((url) => url.pathname === '/o/logout'), page.click('button[type=submit]')]);
  assert.equal((await page.textContent('h1')).trim(), 'Signed out');
  await page.goto(`${base}/o/applications/`);
  assert.match(page.url(), /\/login\?next=/, 'signed out for real');
});
