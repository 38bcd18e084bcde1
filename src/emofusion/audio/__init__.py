"""Audio stage: a video's audio track as mono PCM on the video's frame timeline (:mod:`.stage`: what
``emofusion audio`` calls, and the output's layout); :mod:`.read` reads it back (or any audio file), :mod:`.decode`
decodes tracks."""
