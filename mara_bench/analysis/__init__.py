"""Reads run folders, never writes them: comparisons and their statistics (:mod:`.compare`, :mod:`.stats`),
verdict text, reports and figures (:mod:`.report`, :mod:`.plots`)."""
