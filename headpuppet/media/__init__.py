"""Media: what comes in from files and cameras, and what goes out.

In: video and image files (any format ffmpeg reads, through imageio-ffmpeg), frames ``(H, W, 3)``
uint8 RGB. Out: decoded frames, encoded videos with the driver's audio, face crops, and landmark
images.

- :mod:`.video` - probing, decoding, encoding and muxing through the bundled ffmpeg binary.
- :mod:`.streams` - whether a DRIVER is a live source (camera, stdin, pipe, URL) or a file.
- :mod:`.imaging` - reading still images (orientation, bit depth, colour modes) and saving them.
- :mod:`.crop` - the square face crop around 68 landmarks, and pasting a frame back into a photo.
- :mod:`.detection` - landmarks over a stream of frames, on one detector or several threads.
- :mod:`.landmarks` - the 68-point convention and the rasteriser that draws a landmark image ``y``.
"""
