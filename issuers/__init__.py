"""issuers domain of the points clearing platform."""
