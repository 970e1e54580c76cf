"""Directory: fellowships, pilot sites, venues and meetings; engagement counters per site."""
