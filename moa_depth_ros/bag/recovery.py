"""Open the input of ``moa-depth bag``, including recordings whose recorder died.

An intact rosbag2 is read with ``rosbags``. A recording the recorder never finished is read
here, from what its storage files hold:

* MCAP without summary and footer (the recorder writes them last), cut at any byte: records
  are read in file order up to the last complete one. A chunk the recorder did not finish
  still gives its complete messages: uncompressed, zstd and lz4 chunks decode as far as the
  bytes go.
* sqlite3 without metadata.yaml (also written last): topics and messages come from the
  ``topics`` and ``messages`` tables. A ``.db3`` cut short is opened as the whole pages it
  still has, so sqlite reads them instead of calling the file malformed; messages whose pages
  are past the cut are left out.
* A bag directory without (or with an unreadable) metadata.yaml: its storage files in split
  order.

``InputBag.recovery_note`` tells the summary what was recovered and where reading stopped. An
input with nothing readable raises ``BagError`` naming ``ros2 bag reindex``, which rebuilds
only metadata.yaml and so cannot recover it either.
"""

from __future__ import annotations

from array import array
from binascii import crc32
import contextlib
import os
from pathlib import Path
import re
import struct
import sys
from typing import Any, Iterator
import urllib.parse

from moa_depth_ros.errors import BagError, ConfigError

MCAP_MAGIC = b'\x89MCAP0\r\n'
SQLITE_MAGIC = b'SQLite format 3\x00'
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3'}
# MCAP record opcodes (https://mcap.dev/spec).
FOOTER, SCHEMA, CHANNEL, MESSAGE, CHUNK, DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
RECORD_NAMES = {0x01: 'header', 0x07: 'message index', 0x09: 'attachment', 0x0C: 'metadata'}

_RECORD = struct.Struct('<BQ')  # opcode, content length
_CHUNK_HEAD = struct.Struct('<QQQI')  # start time, end time, uncompressed size, CRC
_MESSAGE_HEAD = struct.Struct('<HIQQ')  # channel id, sequence, log time, publish time
_U16 = struct.Struct('<H')
_U32 = struct.Struct('<I')
_U64 = struct.Struct('<Q')


def _refuse(path: Path, reason: str) -> BagError:
    return BagError(
        f'cannot recover {str(path)!r}: {reason}. `ros2 bag reindex` cannot recover it either: '
        f'it only rebuilds metadata.yaml from readable storage files'
    )


def _zstd() -> Any:
    if sys.version_info >= (3, 14):
        from compression import zstd  # novermin: the standard library has it from 3.14
    else:
        from backports import zstd  # a dependency of rosbags, as it reads zstd with it
    return zstd


class InputBag:
    """The input as ``process_bag`` reads it; recovered inputs say what recovery took."""

    storage: str
    connections: list[Any]
    message_count: int
    ros_distro: str | None

    @property
    def damage(self) -> list[str]:
        """Return why the input needed recovery, one phrase each; empty when intact."""
        return []

    def messages(self) -> Iterator[tuple[Any, int, bytes]]:
        """Yield (connection, log time in ns, serialized message) of every message."""
        raise NotImplementedError

    def recovery_note(self, messages_read: int) -> str | None:
        """Return the summary line of a recovered input (read it last); None when intact."""
        if not self.damage:
            return None
        return f'input recovered: {"; ".join(self.damage)}; read {messages_read} messages'

    def close(self) -> None:
        pass


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[InputBag]:
    """Open a rosbag2 directory, ``.mcap`` or ``.db3``; recover it when it is unfinished."""
    storage, files, reasons, recover = _inspect(path)
    if recover:
        bag: InputBag = _RecoveredInput(path, storage, files, reasons)
    else:
        bag = _RosbagsInput(path, storage)
    try:
        yield bag
    finally:
        bag.close()


def _inspect(path: Path) -> tuple[str, list[Path], list[str], bool]:
    """Return (storage, storage files, reasons beyond the files, whether to recover)."""
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ConfigError(f'{str(path)!r} is not a rosbag2 directory, .mcap or .db3 file')
        storage = SUFFIXES[path.suffix]
        return storage, [path], [], not _finished(path, storage)
    import yaml

    try:
        metadata = yaml.safe_load((path / 'metadata.yaml').read_text())
        storage = str(metadata['rosbag2_bagfile_information']['storage_identifier'])
        problem = None
    except FileNotFoundError:
        storage, problem = '', 'metadata.yaml is missing (the recorder writes it when it stops)'
    except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
        error = ' '.join(str(e).split())  # YAML errors span lines; the summary has one each
        storage, problem = '', f'metadata.yaml is unreadable ({type(e).__name__}: {error})'
    if problem is None:
        files = _storage_files(path, storage)
        return storage, files, [], not all(_finished(f, storage) for f in files)
    found = {s for s in SUFFIXES.values() if _storage_files(path, s)}
    if not found:
        raise ConfigError(
            f'{str(path)!r} is not a rosbag2 directory (no readable metadata.yaml and no .mcap '
            f'or .db3 file): {problem}'
        )
    if len(found) > 1:
        raise BagError(
            f'{str(path)!r} has no readable metadata.yaml and holds both .mcap and .db3 files; '
            f'pass one storage file, or rebuild metadata.yaml with `ros2 bag reindex`'
        )
    storage = found.pop()
    return storage, _storage_files(path, storage), [problem], True


def _storage_files(directory: Path, storage: str) -> list[Path]:
    suffix = next((s for s, name in SUFFIXES.items() if name == storage), None)
    if suffix is None:
        return []

    def split_order(path: Path) -> tuple[int, str]:
        # rosbag2 names split files <bag>_<index><suffix>; index 10 comes after index 9.
        index = re.search(r'_(\d+)$', path.stem)
        return (int(index.group(1)) if index else -1, path.name)

    return sorted((p for p in directory.glob(f'*{suffix}') if p.is_file()), key=split_order)


def _finished(path: Path, storage: str) -> bool:
    """Return False for a storage file its recorder visibly did not finish (cheap checks)."""
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(100)
        if storage == 'mcap':
            if size < 2 * len(MCAP_MAGIC):
                return False
            f.seek(-len(MCAP_MAGIC), os.SEEK_END)
            return f.read() == MCAP_MAGIC  # the summary and footer are written last
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return False  # created but never written, or cut inside its header
    expected = _sqlite_header_size(head)
    return size % _sqlite_page_size(head) == 0 and (expected is None or size >= expected)


def _sqlite_header_size(head: bytes) -> int | None:
    """Return the byte size a sqlite header records, None if it records none."""
    if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
        return None
    page_size = _sqlite_page_size(head)
    pages, change, valid_for = (struct.unpack_from('>I', head, at)[0] for at in (28, 24, 92))
    # The in-header page count is only valid when written by the version that last changed
    # the file (https://sqlite.org/fileformat.html#in_header_database_size).
    return pages * page_size if pages and change == valid_for else None


def _sqlite_page_size(head: bytes) -> int:
    page_size = struct.unpack_from('>H', head, 16)[0]
    return 65536 if page_size == 1 else page_size


class _RosbagsInput(InputBag):
    """An intact bag read with rosbags; its errors become ``BagError``."""

    def __init__(self, path: Path, storage: str) -> None:
        import apsw
        from rosbags.rosbag2 import Reader, ReaderError

        self._path = path
        self._errors = (ReaderError, apsw.Error)
        self._reader = Reader(path)
        try:
            self._reader.open()
        except self._errors as e:
            raise self._error(e) from e
        self.storage = storage
        self.connections = self._reader.connections
        self.message_count = self._reader.message_count
        self.ros_distro = self._reader.ros_distro

    def _error(self, e: Exception) -> BagError:
        if self._path.is_dir():
            advice = (
                'if its metadata.yaml does not match its storage files, move metadata.yaml '
                'away (the storage files are then read directly) or rebuild it with '
                '`ros2 bag reindex`'
            )
        else:
            advice = '`ros2 bag reindex` cannot repair a damaged storage file either'
        return BagError(f'cannot read {str(self._path)!r} ({type(e).__name__}: {e}); {advice}')

    def messages(self) -> Iterator[tuple[Any, int, bytes]]:
        """Yield rosbags' messages in log time order."""
        try:
            yield from self._reader.messages()
        except self._errors as e:
            raise self._error(e) from e

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()


class _RecoveredInput(InputBag):
    """An unfinished recording read from its storage files, one after the other."""

    def __init__(self, path: Path, storage: str, files: list[Path], reasons: list[str]) -> None:
        self.storage = storage
        self._reasons = reasons
        reader = _McapFile if storage == 'mcap' else _SqliteFile
        self._files = [reader(f) for f in files]
        # The topics of all files as one set of connections, as rosbag2 merges split files.
        merged: dict[tuple[str, str], Any] = {}
        self._map: dict[tuple[int, int], tuple[str, str]] = {}
        try:
            for index, storage_file in enumerate(self._files):
                for conn in storage_file.scan():
                    key = (conn.topic, conn.msgtype)
                    self._map[index, conn.id] = key
                    if key in merged:
                        conn = merged[key]._replace(msgcount=merged[key].msgcount + conn.msgcount)
                    merged[key] = conn
        except BaseException:
            self.close()
            raise
        self._conns = {
            key: conn._replace(id=n + 1, owner=self)
            for n, (key, conn) in enumerate(merged.items())
        }
        self.connections = list(self._conns.values())
        self.message_count = sum(conn.msgcount for conn in self.connections)
        self.ros_distro = next((f.ros_distro for f in self._files if f.ros_distro), None)
        if not self.message_count:
            self.close()
            raise _refuse(path, f'{"; ".join(self.damage)}; not one complete message is in it')

    @property
    def damage(self) -> list[str]:
        """Return the directory-level reasons, then where each storage file stopped."""
        return self._reasons + [f.problem for f in self._files if f.problem]

    def messages(self) -> Iterator[tuple[Any, int, bytes]]:
        """Yield the messages file by file, each file's in the order it recorded them."""
        for index, storage_file in enumerate(self._files):
            for local_id, timestamp, data in storage_file.messages():
                key = self._map.get((index, local_id))
                if key is None:
                    continue  # a channel or topic whose definition was not readable
                conn = self._conns[key]
                if data[:4] == ZSTD_MAGIC and conn.ext.serialization_format == 'cdr':
                    # A bag recorded with compression_mode 'message' (said only in the
                    # metadata.yaml that is missing): CDR never starts with this magic.
                    zstd = _zstd()
                    with contextlib.suppress(zstd.ZstdError):  # then copied as it is
                        data = zstd.decompress(data)
                yield conn, timestamp, bytes(data)

    def close(self) -> None:
        for storage_file in self._files:
            storage_file.close()


def _string(buf: memoryview, at: int) -> tuple[str, int]:
    (length,) = _U32.unpack_from(buf, at)
    end = at + 4 + length
    if end > len(buf):
        raise struct.error('string past the end of its record')
    return bytes(buf[at + 4 : end]).decode(), end


class _Stop(Exception):
    """A complete but unreadable MCAP record: reading this file stops there."""


class _McapFile:
    """Records of one MCAP file up to the last complete one (no summary needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # where and why reading stopped; None: it did not
        self.ros_distro: str | None = None  # rosbag2 records it only when it closes the file
        self._schemas: dict[int, tuple[str, str, str]] = {}
        self._channels: dict[int, tuple[str, int, str, str]] = {}  # topic, schema, enc., QoS

    def scan(self) -> list[Any]:
        """Read the file once; return its connections with their message counts."""
        from rosbags.interfaces import (
            Connection,
            ConnectionExtRosbag2,
            MessageDefinition,
            MessageDefinitionFormat,
        )

        counts: dict[int, int] = {}
        for channel_id, _, _ in self.messages():
            counts[channel_id] = counts.get(channel_id, 0) + 1
        formats = {'ros2msg': MessageDefinitionFormat.MSG, 'ros2idl': MessageDefinitionFormat.IDL}
        connections = []
        for channel_id, (topic, schema_id, encoding, qos) in self._channels.items():
            name, schema_encoding, text = self._schemas[schema_id]
            msgdef_format = formats.get(schema_encoding, MessageDefinitionFormat.NONE)
            connections.append(
                Connection(
                    channel_id,
                    topic,
                    name,
                    MessageDefinition(msgdef_format, text),
                    '',  # as rosbags reads MCAP: the typestore supplies definition and hash
                    counts.get(channel_id, 0),
                    ConnectionExtRosbag2(encoding, _parse_qos(qos)),
                    self,
                )
            )
        return connections

    def messages(self) -> Iterator[tuple[int, int, memoryview]]:
        """Yield (channel id, log time, data) of each complete message with a known channel."""
        self._schemas.clear()
        self._channels.clear()
        for op, content, at in self._records():
            try:
                if op == MESSAGE:
                    channel_id, _, log_time, _ = _MESSAGE_HEAD.unpack_from(content)
                    if channel_id in self._channels:
                        yield channel_id, log_time, content[_MESSAGE_HEAD.size :]
                elif op == SCHEMA:
                    (schema_id,) = _U16.unpack_from(content)
                    name, end = _string(content, 2)
                    encoding, end = _string(content, end)
                    self._schemas[schema_id] = (name, encoding, _string(content, end)[0])
                elif op == CHANNEL:
                    channel_id, schema_id = struct.unpack_from('<HH', content)
                    topic, end = _string(content, 4)
                    encoding, end = _string(content, end)
                    # Schemaless channels (id 0) carry no ROS 2 type: they cannot be copied.
                    if schema_id in self._schemas:
                        qos = _mcap_metadata(content, end).get('offered_qos_profiles', '')
                        self._channels[channel_id] = (topic, schema_id, encoding, qos)
            except (struct.error, UnicodeDecodeError) as e:
                self.problem = (
                    f'{self.path.name} has a malformed record at byte {at} ({e}); reading '
                    f'stopped there'
                )
                return

    def _records(self) -> Iterator[tuple[int, memoryview, int]]:
        """Yield (opcode, content, file offset) of schema, channel and message records."""
        name = self.path.name
        with open(self.path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
                raise _refuse(self.path, f'{name} does not start with the MCAP magic bytes')
            at = len(MCAP_MAGIC)
            while True:
                head = f.read(_RECORD.size)
                if not head:
                    self.problem = (
                        f'{name} ends after its last complete record at byte {at}, without '
                        f'summary or footer (the recorder did not finish it)'
                    )
                    return
                if len(head) < _RECORD.size:
                    self.problem = (
                        f'{name} ends mid-record at byte {size} (the record header from byte '
                        f'{at} is incomplete)'
                    )
                    return
                op, length = _RECORD.unpack(head)
                end = at + _RECORD.size + length
                if op in (FOOTER, DATA_END):
                    f.seek(-len(MCAP_MAGIC), os.SEEK_END)
                    if f.read() != MCAP_MAGIC:
                        self.problem = (
                            f'{name} is cut at byte {size} inside its summary (the data section '
                            f'before byte {at} is complete)'
                        )
                    return
                if op == 0:  # not an opcode: zeros or garbage where the recorder stopped
                    self.problem = f'{name} holds no valid record from byte {at} of {size} on'
                    return
                if end > size:
                    yield from self._cut_record(f, op, at, size)
                    return
                try:
                    if op == CHUNK:
                        for op_in, content in self._chunk(memoryview(f.read(length)), at, True):
                            yield op_in, content, at
                    elif op in (SCHEMA, CHANNEL, MESSAGE):
                        yield op, memoryview(f.read(length)), at
                    else:
                        f.seek(length, os.SEEK_CUR)
                except _Stop as e:
                    self.problem = f'{name}: {e}; reading stopped there'
                    return
                at = end

    def _cut_record(
        self, f: Any, op: int, at: int, size: int
    ) -> Iterator[tuple[int, memoryview, int]]:
        """Yield what a record cut by the end of the file still holds; say where it stopped."""
        name = self.path.name
        if op != CHUNK:
            kind = 'message' if op == MESSAGE else RECORD_NAMES.get(op, f'0x{op:02x} record')
            self.problem = f'{name} ends mid-{kind} at byte {size} (its record from byte {at})'
            return
        f.seek(at + _RECORD.size)
        records = self._chunk(memoryview(f.read()), at, False)
        complete = sum(op_in == MESSAGE for op_in, _ in records)
        self.problem = (
            f'{name} ends mid-chunk at byte {size}: the recorder did not finish the chunk from '
            f'byte {at} ({complete} of its messages are complete and were read)'
        )
        for op_in, content in records:
            yield op_in, content, at

    def _chunk(self, content: memoryview, at: int, whole: bool) -> list[tuple[int, memoryview]]:
        """Return a chunk's complete records, its messages last in log time order."""
        try:
            _, _, raw_size, crc = _CHUNK_HEAD.unpack_from(content)
            compression, end = _string(content, _CHUNK_HEAD.size)
            (length,) = _U64.unpack_from(content, end)
        except (struct.error, UnicodeDecodeError) as e:
            if whole:
                raise _Stop(f'the chunk at byte {at} is malformed ({e})') from e
            return []  # cut inside the chunk's own fields: none of its records is there
        data = content[end + 8 : end + 8 + length]
        try:
            raw = memoryview(_decompress(data, compression, whole))
        except Exception as e:  # each codec raises its own type for corrupt data
            if whole:
                raise _Stop(f'the chunk at byte {at} does not decompress ({e})') from e
            return []
        if whole and (len(raw) != raw_size or (crc and crc32(raw) != crc)):
            raise _Stop(f'the chunk at byte {at} fails its size or CRC check')
        records, messages = [], []
        pos = 0
        while pos + _RECORD.size <= len(raw):
            op, length = _RECORD.unpack_from(raw, pos)
            end = pos + _RECORD.size + length
            if end > len(raw):
                if whole:
                    raise _Stop(f'a record in the chunk at byte {at} overruns the chunk')
                break  # the last record of an unfinished chunk
            content = raw[pos + _RECORD.size : end]
            if op == MESSAGE and length >= _MESSAGE_HEAD.size:
                messages.append((_U64.unpack_from(content, 6)[0], content))
            elif op in (SCHEMA, CHANNEL):
                records.append((op, content))
            pos = end
        # A chunk's schemas and channels come before its messages, whatever their order.
        messages.sort(key=lambda item: item[0])
        return records + [(MESSAGE, content) for _, content in messages]

    def close(self) -> None:
        pass


def _decompress(data: memoryview, compression: str, whole: bool) -> bytes:
    """Decompress chunk records; of a cut chunk, as much as the bytes that are there give."""
    if compression == '':
        return bytes(data)
    if compression == 'zstd':
        zstd = _zstd()
        return zstd.decompress(data) if whole else zstd.ZstdDecompressor().decompress(data)
    if compression == 'lz4':
        import lz4.frame  # a dependency of rosbags, as it reads lz4 chunks with it

        if whole:
            return lz4.frame.decompress(bytes(data))
        return lz4.frame.LZ4FrameDecompressor().decompress(bytes(data))
    raise ValueError(f'unknown chunk compression {compression!r}')


def _mcap_metadata(buf: memoryview, at: int) -> dict[str, str]:
    (length,) = _U32.unpack_from(buf, at)
    end, at = at + 4 + length, at + 4
    items = {}
    while at < end:
        key, at = _string(buf, at)
        items[key], at = _string(buf, at)
    return items


def _parse_qos(text: str) -> list[Any]:
    from rosbags.rosbag2 import ReaderError
    from rosbags.rosbag2.metadata import parse_qos

    try:
        return parse_qos(text)
    except ReaderError:
        return []  # QoS only informs the output bag's metadata; the messages still copy


class _SqliteFile:
    """The topics and messages tables of one ``.db3``, also when the file is cut short."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # where and why reading stopped; None: it did not
        self.ros_distro: str | None = None
        self._db: Any = None
        self._vfs: Any = None
        self._index: Any = None  # message ids, log times, topic ids; their log time order

    def scan(self) -> list[Any]:
        """Open the database and index its messages; return its connections."""
        import apsw

        name, size = self.path.name, self.path.stat().st_size
        with open(self.path, 'rb') as f:
            head = f.read(100)
        if len(head) < 100 or not head.startswith(SQLITE_MAGIC):
            raise _refuse(self.path, f'{name} is not an sqlite3 database ({size} bytes)')
        page_size, expected = _sqlite_page_size(head), _sqlite_header_size(head)
        vfs, where = None, f'{name} is damaged'
        if (expected is not None and size < expected) or size % page_size:
            records = f'its header records {expected} bytes' if expected else 'mid-page'
            where = f'{name} is cut short at byte {size} ({records})'
            self.problem = f'{where}: rows on pages past the cut are lost'
            vfs = f'moa-depth-cut-{id(self)}'
            self._vfs = _whole_pages_vfs(vfs, size // page_size, page_size)
        uri = f'file:{urllib.parse.quote(str(self.path.absolute()))}?immutable=1'
        try:
            self._db = apsw.Connection(
                uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=vfs
            )
            connections = self._connections()
        except apsw.Error as e:
            self.close()
            raise _refuse(self.path, f'{where}; its tables or topics are unreadable ({e})') from e
        known = {conn.id for conn in connections}
        ids, times, topics = array('q'), array('q'), array('q')
        try:
            rows = self._db.execute('SELECT id, timestamp, topic_id FROM messages ORDER BY id')
            for message_id, timestamp, topic_id in rows:
                if topic_id in known:
                    ids.append(message_id)
                    times.append(timestamp)
                    topics.append(topic_id)
        except apsw.Error as e:
            # Pages past a cut: the rows before them are all there (rowid order).
            if self.problem is None:
                self.problem = f'{name} has a damaged messages table after row {len(ids)} ({e})'
        import numpy as np

        order = np.lexsort((np.asarray(ids), np.asarray(times)))
        self._index = (ids, times, topics, order)
        counts = dict.fromkeys(known, 0)
        for topic_id in topics:
            counts[topic_id] += 1
        return [conn._replace(msgcount=counts[conn.id]) for conn in connections]

    def _connections(self) -> list[Any]:
        import apsw
        from rosbags.interfaces import (
            Connection,
            ConnectionExtRosbag2,
            MessageDefinition,
            MessageDefinitionFormat,
        )

        db = self._db
        columns = {row[1] for row in db.execute('PRAGMA table_info(topics)')}
        # Older rosbag2 schemas lack these columns.
        qos = 'offered_qos_profiles' if 'offered_qos_profiles' in columns else "''"
        digest = 'type_description_hash' if 'type_description_hash' in columns else "''"
        rows = db.execute(
            f'SELECT id, name, type, serialization_format, {qos}, {digest} FROM topics'
        ).fetchall()
        formats = {'ros2msg': MessageDefinitionFormat.MSG, 'ros2idl': MessageDefinitionFormat.IDL}
        msgdefs = {}
        # Optional tables: newer rosbag2 schemas only; their damage costs only what they add.
        with contextlib.suppress(apsw.Error):
            self.ros_distro = db.execute('SELECT ros_distro FROM schema').fetchone()[0] or None
        with contextlib.suppress(apsw.Error):
            for msgtype, encoding, text in db.execute(
                'SELECT topic_type, encoding, encoded_message_definition FROM message_definitions'
            ):
                if encoding in formats:
                    msgdefs[msgtype] = MessageDefinition(formats[encoding], text)
        none = MessageDefinition(MessageDefinitionFormat.NONE, '')
        return [
            Connection(
                topic_id,
                topic,
                msgtype,
                msgdefs.get(msgtype, none),
                digest or '',
                0,
                ConnectionExtRosbag2(fmt, _parse_qos(qos or '')),
                self,
            )
            for topic_id, topic, msgtype, fmt, qos, digest in rows
        ]

    def messages(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield (topic id, log time, data) in log time order, as rosbags reads sqlite3."""
        import apsw

        ids, times, topics, order = self._index
        lost = 0
        cursor = self._db.cursor()
        for i in order.tolist():
            try:
                row = cursor.execute(
                    'SELECT data FROM messages WHERE id = ?', (ids[i],)
                ).fetchone()
            except apsw.Error:
                row = None  # its data lies on pages past the cut
            if row is None:
                lost += 1
                continue
            yield topics[i], times[i], row[0]
        if lost:
            where = self.problem or f'{self.path.name} is damaged'
            self.problem = f'{where}; {lost} messages whose data is unreadable were left out'

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
        vfs, self._vfs = self._vfs, None
        if vfs is not None:
            vfs.unregister()


def _whole_pages_vfs(name: str, pages: int, page_size: int) -> Any:
    """Register a sqlite VFS showing a cut database as the whole pages it still has.

    sqlite calls a file shorter than its header's page count malformed; with the count and
    the size lowered to the whole pages present, it reads those and reports only the rows
    that reference pages past the cut.
    """
    import apsw

    class File(apsw.VFSFile):
        def xRead(self, amount: int, offset: int) -> bytes:
            data = super().xRead(amount, offset)
            if offset <= 28 and offset + len(data) >= 32:
                patched = bytearray(data)
                patched[28 - offset : 32 - offset] = pages.to_bytes(4, 'big')
                return bytes(patched)
            return data

        def xFileSize(self) -> int:
            return pages * page_size

    class Vfs(apsw.VFS):
        def xOpen(self, filename: Any, flags: list[int]) -> Any:
            return File('', filename, flags)

    return Vfs(name, '')
