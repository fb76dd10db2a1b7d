"""Dreaming: optimize a loop's waveform so that a chosen region of the network fires.

Split like Lucent's optvis: params (the waveform), transforms (small composable functions
that make the result robust), objectives (an algebra over selections and penalties), and
the step loop that knows nothing about which of them it runs.
"""
