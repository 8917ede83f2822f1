"""Object detection in the runner (`task: detection` datasets): torchvision's Faster R-CNN with a linear box
classifier (`method=faster_rcnn`) or RepMet's distance-metric head (`method=repmet_det`), base training, few-shot
detection episodes on held-out classes, and VOC mAP evaluation. Nothing needs compiling: RoI Align, NMS and box
IoU come from `torchvision.ops`."""
