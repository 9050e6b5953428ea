"""The S3 filesystem prepare and tokenize open for `s3://` URLs (see pipeline.io.filesystem)."""

from __future__ import annotations

import s3fs


class BotocoreRetriedS3FileSystem(s3fs.S3FileSystem):
    """s3fs without its own retry loops, so that they do not multiply botocore's tries.

    s3fs would repeat a request that botocore gave up on (throttling, a connection error) and
    a failed body read, up to `retries` tries each, nested. A failed body read is left to
    `pipeline.errors.with_retries`. (A class attribute: s3fs takes no `retries` argument.)
    """

    retries = 1
