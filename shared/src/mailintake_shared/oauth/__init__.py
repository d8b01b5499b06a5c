"""OAuth2 for Google and Microsoft 365: authorization (code flow with PKCE), token refresh,
and the per-connection token store shared by the config API and the fetcher."""
