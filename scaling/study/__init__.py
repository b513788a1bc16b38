"""The study: compose a sweep, train it, fit it, check a held-out run, report. The only part of
``scaling`` that imports ``analysis``."""
