"""GDPR erasure (issue 6). Built so far: request intake."""
