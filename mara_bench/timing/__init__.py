"""``mara_bench time``: clocks, memory, FLOP counting and the results schema (:mod:`.measure`), files, table and plot
(:mod:`.tables`), size sweeps (:mod:`.sweep`) and the test systems (:mod:`.systems`)."""
