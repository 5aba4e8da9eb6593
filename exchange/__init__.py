"""exchange domain of the points clearing platform."""
