"""The web layer: request signatures, authentication, ingress, problem+json helpers, the platform key."""
