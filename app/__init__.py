"""The spine-seg MONAI Deploy application (``python app -i IN -o OUT [-m MODELS]``)."""
