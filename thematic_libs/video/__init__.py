"""Video AI on the platform side: frame batches in, detections, events and tickets out.

The model code (`ml/`) imports nothing of the platform; this package is where its outputs meet the warehouse:

- `detections`: the schema of `silver/video/detections` and its writer, shared by batch scoring (here) and the
  streaming consumer of `video.frames`, so both write the same rows the same way;
- `frames`: frame batches of the landing zone (`zhengshu.video_frames`): manifest, names, checksums, decoding;
- `scoring`: every complete frame batch scored with the production model of each algorithm, idempotently;
- `events`: K event-class detections on one camera within W minutes make an event (rules in ml/algorithms.yaml);
- `tickets`: the events as dispatch candidates (source `video_ai`), for the ticket feed.
"""
