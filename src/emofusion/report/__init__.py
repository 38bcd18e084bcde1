"""Report stage: the results table, the figures and the ABAW submissions, from evaluated fusion runs.

:mod:`.stage` is what ``emofusion report`` calls (``write_report``) and lists the outputs; :mod:`.runs` reads the
evaluated runs, :mod:`.table` builds the table, :mod:`.plots` the figures, :mod:`.submission` writes and checks
the submission files.
"""
