"""Face stage: the subject's aligned face in every frame of a clip, one HDF5 store per clip.

- :mod:`.stage`: what ``emofusion faces`` calls (:func:`~.stage.extract_faces`, the MTCNN path,
  :func:`~.stage.faces_from_crops`, the pre-cropped path, and :func:`~.stage.extract_face_shard`, several clips
  in one process); :mod:`.pipeline`: decoding, detection and writing overlapped through bounded queues.
- :mod:`.config`: :class:`~.config.FaceSettings` (the ``faces:`` section) and the summary of a written store.
- :mod:`.detector`: the batched MTCNN (:mod:`.pyramid`: its images, pyramid and candidate crops);
  :mod:`.tracker`: the subject's face frame after frame; :mod:`.align`: the similarity alignment;
  :mod:`.memory`: releasing freed memory between batches.
- :mod:`.store`: the store's layout (described there only), writing and reading it; :mod:`.crops`: the
  ``cropped_aligned`` source.
"""
