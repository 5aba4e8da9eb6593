"""risk domain of the points clearing platform."""
