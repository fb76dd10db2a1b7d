"""Signal code: sound as arrays, no devices and no threads.

- io.py: decode any audio file, resample, write WAV, encode test material;
- eq.py: the loop's EQ; measures.py: what a loop sounds like, in numbers (octave balance,
  flatness, onsets ...); scalogram.py: the differentiable constant-Q front end the ear
  hears through; plot.py: a scalogram as a PNG.

The procedural music generator is immersions/synth.py; real-time sound in and out
(player, capture, recorder) is immersions/devices/.
"""
