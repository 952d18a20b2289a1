/* Header-only target: the layout of the statistics file (see include/). */
