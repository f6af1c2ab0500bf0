// Sign-in on a stage whose API Gateway wants a token (DicomWeb.Authorizer cognito or oidc): the
// OpenID Connect authorization code flow with PKCE (OpenID Connect Core 1.0 §3.1, RFC 7636), in
// the page. The provider comes from the page's <meta> elements (DicomWeb.WebAppOidcAuthority,
// WebAppOidcClientId, WebAppOidcScopes); without them the app signs nobody in and sends no
// token (locally the browser answers HTTP Basic challenges itself).
//
// Sign in: discovery document → authorization_endpoint, which redirects back to this page with
// ?code&state; the code and the PKCE verifier → token_endpoint → the access token, kept in
// sessionStorage (this tab only) until it expires or the user signs out.

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

const authority = meta("dicomweb-oidc-authority").replace(/\/$/, "");
const clientId = meta("dicomweb-oidc-client-id");
const scopes = meta("dicomweb-oidc-scopes");

const TOKEN_KEY = "dicomweb-access-token";
const FLOW_KEY = "dicomweb-sign-in";

/** Whether this stage signs in (the page names a provider). */
export const signInEnabled = Boolean(authority && clientId);

/** The access token of this tab's sign-in, "" when none or expired. */
export function accessToken() {
  const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
  if (!saved) return "";
  if (saved.expires && saved.expires <= Date.now()) {
    sessionStorage.removeItem(TOKEN_KEY);
    return "";
  }
  return saved.token;
}

/** The headers that authenticate a request: `Authorization: Bearer` when signed in. */
export function authorization() {
  const token = accessToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** This page's address without query or fragment: the redirect URI the provider calls back. */
const redirectUri = () => new URL(location.pathname, location.origin).href;

const base64url = (bytes) =>
  btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

const randomText = () => base64url(crypto.getRandomValues(new Uint8Array(32)));

async function discovery() {
  const url = `${authority}/.well-known/openid-configuration`;
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (error) {
    throw new Error(`Sign-in failed: the provider ${authority} cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw new Error(`Sign-in failed: ${url} answered HTTP ${response.status}.`);
  return response.json();
}

/** Go to the provider's sign-in page; it comes back to this page with a code. */
export async function signIn() {
  const provider = await discovery();
  const verifier = randomText();
  const state = randomText();
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(FLOW_KEY, JSON.stringify({ state, verifier }));
  const url = new URL(provider.authorization_endpoint);
  const query = {
    response_type: "code",
    client_id: clientId,
    redirect_uri: redirectUri(),
    scope: scopes,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  location.assign(url.href);
}

/** On the provider's call back (?code or ?error): trade the code for the access token. */
export async function completeSignIn() {
  const answer = new URLSearchParams(location.search);
  if (!answer.has("code") && !answer.has("error")) return;
  history.replaceState(null, "", redirectUri()); // the code is used once: not in the history
  const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) || "null");
  sessionStorage.removeItem(FLOW_KEY);
  if (answer.has("error")) {
    const cause = [answer.get("error"), answer.get("error_description")].filter(Boolean).join(": ");
    throw new Error(`Sign-in failed: the provider answered ${cause}.`);
  }
  if (!flow || flow.state !== answer.get("state")) {
    throw new Error("Sign-in failed: the answer does not belong to a sign-in of this tab (state); sign in again.");
  }
  const provider = await discovery();
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    code: answer.get("code"),
    redirect_uri: redirectUri(),
    client_id: clientId,
    code_verifier: flow.verifier,
  });
  const response = await fetch(provider.token_endpoint, { method: "POST", body });
  const tokens = await response.json().catch(() => ({}));
  if (!response.ok || !tokens.access_token) {
    const cause = tokens.error_description || tokens.error || `HTTP ${response.status}`;
    throw new Error(`Sign-in failed: the token endpoint refused the code (${cause}).`);
  }
  const expires = tokens.expires_in ? Date.now() + Number(tokens.expires_in) * 1000 : 0;
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token: tokens.access_token, expires }));
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.assign(redirectUri());
}

/** Show "Sign in" or "Sign out" (only when this stage signs in) and wire them. */
export function initSignIn(onError) {
  const signInButton = document.getElementById("sign-in");
  const signOutButton = document.getElementById("sign-out");
  const signedIn = Boolean(accessToken());
  signInButton.hidden = !signInEnabled || signedIn;
  signOutButton.hidden = !signInEnabled || !signedIn;
  signInButton.addEventListener("click", () => signIn().catch(onError));
  signOutButton.addEventListener("click", signOut);
}
