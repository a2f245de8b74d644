"""The Ray Serve application (`affectstream serve --ray`, extra `affectstream[ray]`): session
hosts holding each connection's session, and shared, batched model deployments.

- `hosts.py`: `SessionHost` (the WebSocket ingress, today's push-mode server code) and the
  `Registry` of sessions (--max-sessions across hosts, 1013; 1012 on shutdown and redeploy).
- `models.py`: `ModelServer` (an encoder with `@serve.batch`) and `WhisperServer`.
- `remote.py`: `RemoteBackend` / `RemoteDecoder`, the local interfaces over those
  deployments, and `remote_predictors(config)` for session hosts and agents' `Recognizer`s.
- `app.py`: building, deploying and shutting down the application.

docs/serving.md says what runs where and why.
"""
