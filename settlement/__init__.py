"""settlement domain of the points clearing platform."""
