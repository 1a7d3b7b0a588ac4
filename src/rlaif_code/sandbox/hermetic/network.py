"""Stand-in fetches: HTTP(S) requests answered inside the process; no socket is ever opened.

The sandbox has no network (its own network namespace), so a snippet that fetches its
input (`Image.open(requests.get(url, stream=True).raw)`, `urlopen(url)`, diffusers'
and transformers' `load_image(url)`) would fail on the fetch. In hermetic mode the
transports of the HTTP clients the snippets use answer every http(s) URL to a host other
than this machine with a 200 response whose body is a stand-in of the kind the URL names
(content.py): an image for .jpg/.png/..., a WAV tone for .wav/.flac/.mp3/..., CSV, JSON,
text, PDF, else an HTML page (JSON when the request accepts JSON only by asking for it):

* requests: `HTTPAdapter.send` (so requests.get/post/..., Session.request), with a body
  that reads like urllib3's raw response (`.raw.read()`, streaming, `.content`);
* httpx / httpx2 (transformers' load_image, huggingface_hub): `HTTPTransport.handle_request`
  and the async transport;
* urllib: `OpenerDirector.open` (so urlopen, urlretrieve, pandas reading a URL).

Requests to localhost go to the real transport (and so fail or reach what the snippet
itself serves, inside the sandbox). Anything that opens a socket itself (socket, http.client,
urllib3 alone, aiohttp) is not answered and meets the blocked network. Every answered URL
is recorded in `answers.STAND_INS`. It proves nothing about the URL: not that it exists,
nor what it really holds.

Standard library only: this runs inside the sandboxed interpreter.
"""

import io

from . import content
from .answers import record_stand_in

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}


class StandInBody(io.BytesIO):
    """A stood-in response body that reads like urllib3's raw response (requests' `.raw`)."""

    def __init__(self, data, url, mime):
        super().__init__(data)
        self.stand_in_url = url
        self.status = 200
        self.reason = "OK"
        self.version = 11
        self.headers = {"Content-Type": mime, "Content-Length": str(len(data))}
        self.decode_content = True

    def stream(self, amt=65536, decode_content=None):
        while True:
            chunk = self.read(amt)
            if not chunk:
                break
            yield chunk

    def release_conn(self):
        pass

    def getheader(self, name, default=None):
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return default


def is_remote(url, schemes=("http", "https")):
    """Whether `url` is one we answer: the scheme is one of `schemes` and the host is not this machine."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except (ValueError, AttributeError):
        return False
    return parts.scheme.lower() in schemes and bool(host) and host not in _LOCAL_HOSTS and not host.startswith("127.")


def serve(url, method="GET", accept=""):
    """(body, MIME type) of the stand-in answer to `method url`, recorded."""
    kind = content.kind_of_name(url)
    if kind is None:
        kind = "json" if "json" in (accept or "").lower() else "html"
    data, mime = content.make(kind, content.extension(url))
    record_stand_in("url", url, kind)
    if str(method).upper() == "HEAD":
        data = b""
    return data, mime


def patch_requests(module):
    """requests.adapters: every send to a remote http(s) URL is answered here."""
    cls = getattr(module, "HTTPAdapter", None)
    if not isinstance(cls, type) or cls.__dict__.get("_rlaif_patched"):
        return
    original = cls.send

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None, **kwargs):
        url = request.url.decode("utf-8", "replace") if isinstance(request.url, bytes) else str(request.url)
        if not is_remote(url):
            return original(self, request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies,
                            **kwargs)
        data, mime = serve(url, request.method or "GET", request.headers.get("Accept", ""))
        return self.build_response(request, StandInBody(data, url, mime))

    cls.send = send
    cls._rlaif_patched = True


def patch_httpx(module):
    """httpx(2)._transports.default: the sync and async HTTP transports."""
    response_class = getattr(module, "Response", None)
    if response_class is None:
        return

    def answer(request):
        url = str(request.url)
        data, mime = serve(url, request.method, request.headers.get("accept", ""))
        return response_class(200, headers={"content-type": mime, "content-length": str(len(data))}, content=data,
                              request=request)

    sync_cls = getattr(module, "HTTPTransport", None)
    if isinstance(sync_cls, type) and not sync_cls.__dict__.get("_rlaif_patched"):
        original_sync = sync_cls.handle_request

        def handle_request(self, request):
            if not is_remote(str(request.url)):
                return original_sync(self, request)
            return answer(request)

        sync_cls.handle_request = handle_request
        sync_cls._rlaif_patched = True
    async_cls = getattr(module, "AsyncHTTPTransport", None)
    if isinstance(async_cls, type) and not async_cls.__dict__.get("_rlaif_patched"):
        original_async = async_cls.handle_async_request

        async def handle_async_request(self, request):
            if not is_remote(str(request.url)):
                return await original_async(self, request)
            return answer(request)

        async_cls.handle_async_request = handle_async_request
        async_cls._rlaif_patched = True


def patch_urllib(module):
    """urllib.request: OpenerDirector.open, which urlopen and urlretrieve go through."""
    cls = getattr(module, "OpenerDirector", None)
    if not isinstance(cls, type) or cls.__dict__.get("_rlaif_patched"):
        return
    original = cls.open

    def open(self, fullurl, *args, **kwargs):  # noqa: A001 (the method's own name)
        url = getattr(fullurl, "full_url", fullurl)
        if not isinstance(url, str) or not is_remote(url, ("http", "https", "ftp")):
            return original(self, fullurl, *args, **kwargs)
        method = fullurl.get_method() if hasattr(fullurl, "get_method") else "GET"
        accept = fullurl.get_header("Accept", "") if hasattr(fullurl, "get_header") else ""
        data, mime = serve(url, method, accept)
        import http.client

        headers = http.client.HTTPMessage()
        headers["Content-Type"] = mime
        headers["Content-Length"] = str(len(data))
        return module.addinfourl(StandInBody(data, url, mime), headers, url, 200)

    cls.open = open
    cls._rlaif_patched = True
