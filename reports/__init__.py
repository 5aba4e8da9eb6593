"""reports domain of the points clearing platform."""
