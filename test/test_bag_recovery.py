"""``moa-depth bag`` on recordings whose recorder died: files cut short, no metadata.yaml.

Each test damages a complete recording of the camera bag of test_bag.py (written with
rosbags, or rewritten with the ``mcap`` package for other chunk compressions) the way a dead
recorder leaves it, then checks what a user notices: the tool processes what is there and
its summary says that the input was recovered, how much was read and where reading stopped;
or, where nothing is readable, it refuses with one line naming ``ros2 bag reindex``.
"""

from __future__ import annotations

import shutil

from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
import numpy as np
import pytest
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from test_bag import _read_rosbags, _settings, write_input_bag
from tiny_model import write_tiny_onnx

from moa_depth_ros import cli
from moa_depth_ros.bag import process as bag
from moa_depth_ros.errors import BagError, ConfigError

INPUT_TOPICS = (
    '/note',
    '/camera/camera_info',
    '/camera/image_raw',
    '/camera/image_raw/compressed',
)
ALL = 22  # messages of the camera bag: a note, then 7 x (camera_info, image, compressed)
FRAMES, PROCESSED = 7, 6  # one image has an unknown encoding (see test_bag.py)


@pytest.fixture(scope='module')
def model_path(tmp_path_factory):
    return write_tiny_onnx(tmp_path_factory.mktemp('model') / 'tiny.onnx', range_m=(0.5, 10.0))


@pytest.fixture(scope='module')
def recordings(tmp_path_factory):
    """Complete recordings of the camera bag, by how they store it: name -> bag directory."""
    root = tmp_path_factory.mktemp('recordings')
    write_input_bag(root / 'mcap', 'mcap')  # rosbags: one uncompressed chunk
    write_input_bag(root / 'sqlite3', 'sqlite3')
    _rewrite_with_rosbags(root / 'mcap', root / 'mcap_zstd', 'mcap', CompressionMode.STORAGE)
    _rewrite_with_rosbags(
        root / 'sqlite3', root / 'sqlite3_zstd_messages', 'sqlite3', CompressionMode.MESSAGE
    )
    # Small chunks as a long ros2 bag recording has many: lz4 and zstd as ros2 bag writes them.
    for name, compression, chunked in [
        ('mcap_lz4', CompressionType.LZ4, True),
        ('mcap_zstd_chunks', CompressionType.ZSTD, True),
        ('mcap_unchunked', CompressionType.NONE, False),
    ]:
        (root / name).mkdir()
        _rewrite_with_mcap(
            _storage_file(root / 'mcap'), root / name / f'{name}.mcap', compression, chunked
        )
    return root


def _rewrite_with_rosbags(src, dst, storage, mode):
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    writer = Writer(dst, version=8, storage_plugin=StoragePlugin[storage.upper()])
    writer.set_compression(mode, CompressionFormat.ZSTD)
    with Reader(src) as reader, writer:
        conns = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore)
            for c in reader.connections
        }
        for conn, t_ns, raw in reader.messages():
            writer.write(conns[conn.id], t_ns, raw)


def _rewrite_with_mcap(src, dst, compression, chunked):
    with open(src, 'rb') as source, open(dst, 'wb') as out:
        writer = McapWriter(out, chunk_size=4096, compression=compression, use_chunking=chunked)
        writer.start(profile='ros2', library='test')
        schemas, channels = {}, {}
        for schema, channel, message in make_reader(source).iter_messages(log_time_order=False):
            if schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(
                    schema.name, schema.encoding, schema.data
                )
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding, schemas[schema.id], channel.metadata
                )
            writer.add_message(
                channels[channel.id], message.log_time, message.data, message.publish_time
            )
        writer.finish()


def _storage_file(bag_dir):
    (path,) = [p for p in bag_dir.iterdir() if p.suffix in ('.mcap', '.db3')]
    return path


def _input_messages(recording):
    """Return [(topic, log time, raw)] of a complete recording, in log time order."""
    with Reader(_storage_file(recording)) as reader:
        return [(c.topic, t_ns, bytes(raw)) for c, t_ns, raw in reader.messages()]


def _copied(output, topics=INPUT_TOPICS):
    """Return [(topic, log time, raw)] of the input topics in an output bag, by log time."""
    with Reader(output) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages() if c.topic in topics]


def _cut(src, dst, end, zeros=0):
    """Copy the first ``end`` bytes of ``src`` to ``dst`` (then ``zeros`` zero bytes)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:end] + bytes(zeros))
    return dst


def _process(input_path, output_path, model_path):
    summary = bag.process_bag(
        input_path, output_path, settings=_settings(model_path), progress=False
    )
    assert (output_path / 'metadata.yaml').is_file()  # a normal, finished bag
    assert not output_path.with_name(output_path.name + '.partial').exists()
    if summary['recovered']:
        assert f'\n{summary["recovered"]}\n' in bag.format_summary(summary)
    return summary


def _check_recovered(summary, output, expected, where):
    """Check that the summary says how much was read and where, and the output has that."""
    assert summary['recovered'].startswith('input recovered: ')
    assert where in summary['recovered']
    assert summary['recovered'].endswith(f'; read {len(expected)} messages')
    assert summary['messages_read'] == len(expected)
    assert _copied(output) == sorted(expected, key=lambda m: m[1])
    images = sum(topic == '/camera/image_raw' for topic, _, _ in expected)
    processed = images - (images > 5)  # the sixth image has an unknown encoding
    assert (summary['frames'], summary['processed']) == (images, processed)
    assert summary['topics_written'].get('/camera/depth/image_rect', 0) == processed


def _refused(input_path, tmp_path, model_path, capsys, *phrases):
    """Check that the tool exits 2 with one line naming `ros2 bag reindex`, writing nothing."""
    with pytest.raises(BagError, match='ros2 bag reindex'):
        bag.process_bag(input_path, tmp_path / 'out', settings=_settings(model_path))
    argv = ['bag', str(input_path), str(tmp_path / 'out'), '--model-path', model_path]
    assert cli.main([*argv, '--no-progress']) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    line = captured.err
    assert line.startswith('moa-depth bag: error: cannot recover ') and line.count('\n') == 1
    assert '`ros2 bag reindex`' in line and 'Traceback' not in line
    for phrase in phrases:
        assert phrase in line
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'out.partial').exists()


# ---------------------------------------------------------------------------------------- MCAP


@pytest.mark.parametrize('recording', ['mcap', 'mcap_unchunked'])
def test_mcap_cut_mid_message_keeps_every_complete_message(
    tmp_path, model_path, recordings, recording
):
    """Uncompressed records: every message whose record the file still holds is processed."""
    source = _storage_file(recordings / recording)
    raw = source.read_bytes()
    messages = _input_messages(recordings / recording)
    ends = [raw.find(data) + len(data) for _, _, data in messages]  # records end with the data
    assert min(ends) > 0 and ends == sorted(ends)
    kind = 'mid-chunk' if recording == 'mcap' else 'mid-message'
    images = [i for i, (topic, _, _) in enumerate(messages) if topic == '/camera/image_raw']
    for n, image in enumerate([images[2], images[5]]):  # cut inside the 3rd and 6th image
        cut = ends[image] - 100
        damaged = _cut(source, tmp_path / f'in{n}' / source.name, cut)
        summary = _process(damaged, tmp_path / f'out{n}', model_path)
        expected = [m for m, end in zip(messages, ends) if end <= cut]
        assert len(expected) == image
        _check_recovered(summary, tmp_path / f'out{n}', expected, f'ends {kind} at byte {cut}')


@pytest.mark.parametrize('recording', ['mcap_lz4', 'mcap_zstd_chunks'])
def test_compressed_chunks_cut_mid_chunk_keep_every_complete_chunk(
    tmp_path, model_path, recordings, recording
):
    source = _storage_file(recordings / recording)
    messages = _input_messages(recordings / recording)
    with open(source, 'rb') as f:
        chunks = sorted(
            make_reader(f).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset
        )
    assert len(chunks) >= 4
    for k in (1, len(chunks) // 2, len(chunks) - 1):
        chunk = chunks[k]
        before = [m for m in messages if m[1] <= chunks[k - 1].message_end_time]
        through = [m for m in messages if m[1] <= chunk.message_end_time]
        for cut in (chunk.chunk_start_offset + chunk.chunk_length // 2, chunk.chunk_start_offset):
            damaged = _cut(source, tmp_path / f'in_{k}_{cut}' / source.name, cut)
            output = tmp_path / f'out_{k}_{cut}'
            summary = _process(damaged, output, model_path)
            # What an unfinished chunk gives depends on the codec's block size: at least
            # every earlier chunk, at most this one too, and always a prefix of the recording.
            read = summary['messages_read']
            assert len(before) <= read <= len(through) and len(before) > 0
            where = f'ends after its last complete record at byte {cut}'
            if cut != chunk.chunk_start_offset:
                where = (
                    f'ends mid-chunk at byte {cut}: the recorder did not finish the chunk '
                    f'from byte {chunk.chunk_start_offset}'
                )
            _check_recovered(summary, output, messages[:read], where)


def test_mcap_without_anything_complete_is_refused_naming_reindex(
    tmp_path, model_path, recordings, capsys
):
    source = _storage_file(recordings / 'mcap_zstd')  # rosbags: one zstd chunk for the bag
    raw = source.read_bytes()
    header_end = 8 + 9 + int.from_bytes(raw[9:17], 'little')
    with open(source, 'rb') as f:
        (chunk,) = make_reader(f).get_summary().chunk_indexes
    cases = [
        (header_end, f'ends after its last complete record at byte {header_end}'),
        # A zstd chunk smaller than a zstd block decodes only whole.
        (chunk.chunk_start_offset + 50, f'ends mid-chunk at byte {chunk.chunk_start_offset + 50}'),
        (chunk.chunk_start_offset + chunk.chunk_length - 1, '(0 of its messages are complete'),
        (5, 'does not start with the MCAP magic'),
    ]
    for n, (cut, phrase) in enumerate(cases):
        damaged = _cut(source, tmp_path / f'in{n}' / source.name, cut)
        _refused(damaged, tmp_path, model_path, capsys, phrase)
        shutil.rmtree(damaged.parent)
    garbage = tmp_path / 'garbage.mcap'
    garbage.write_bytes(b'not a recording at all')
    _refused(garbage, tmp_path, model_path, capsys, 'does not start with the MCAP magic')
    shutil.copy(garbage, tmp_path / 'garbage.bag')
    with pytest.raises(ConfigError, match='not a rosbag2 directory, .mcap or .db3 file'):
        bag.process_bag(tmp_path / 'garbage.bag', tmp_path / 'out', settings=_settings(model_path))


def test_mcap_cut_in_its_summary_or_followed_by_zeros(tmp_path, model_path, recordings):
    """Data complete but summary cut; and a cut the file system padded with zeros."""
    source = _storage_file(recordings / 'mcap_zstd')
    raw = source.read_bytes()
    messages = _input_messages(recordings / 'mcap_zstd')
    damaged = _cut(source, tmp_path / 'summary' / source.name, len(raw) - 20)
    summary = _process(damaged, tmp_path / 'out_summary', model_path)
    _check_recovered(summary, tmp_path / 'out_summary', messages, 'inside its summary')
    assert (summary['frames'], summary['processed']) == (FRAMES, PROCESSED)

    source = _storage_file(recordings / 'mcap_lz4')
    messages = _input_messages(recordings / 'mcap_lz4')
    with open(source, 'rb') as f:
        chunks = sorted(
            make_reader(f).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset
        )
    cut = chunks[3].chunk_start_offset
    damaged = _cut(source, tmp_path / 'zeros' / source.name, cut, zeros=4096)
    summary = _process(damaged, tmp_path / 'out_zeros', model_path)
    expected = [m for m in messages if m[1] <= chunks[2].message_end_time]
    _check_recovered(summary, tmp_path / 'out_zeros', expected, f'no valid record from byte {cut}')


def test_mcap_directory_without_metadata_reads_its_split_files_in_order(
    tmp_path, model_path, recordings, capsys
):
    """The recorder split the recording, then died: no metadata.yaml, the last file cut."""
    source = _storage_file(recordings / 'mcap')
    messages = _input_messages(recordings / 'mcap')
    _cut(source, tmp_path / 'rec' / 'rec_0.mcap', source.stat().st_size)
    # The next file from another writer: other channel ids for the same topics.
    second = _storage_file(recordings / 'mcap_unchunked')
    raw = second.read_bytes()
    end_of_third = raw.find(messages[3][2]) + len(messages[3][2])
    _cut(second, tmp_path / 'rec' / 'rec_1.mcap', end_of_third + 20)
    argv = ['bag', str(tmp_path / 'rec'), str(tmp_path / 'out'), '--model-path', model_path]
    assert cli.main([*argv, '--min-depth-m', '1.5', '--no-progress']) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith('input recovered: '))
    assert 'metadata.yaml is missing' in line and 'rec_0.mcap' not in line
    assert f'rec_1.mcap ends mid-message at byte {end_of_third + 20}' in line
    assert line.endswith(f'read {ALL + 4} messages')
    assert f'frames: {FRAMES + 1} on /camera/image_raw' in printed
    out = _read_rosbags(tmp_path / 'out')
    assert len(out['/camera/image_raw']) == FRAMES + 1 and len(out['/note']) == 2
    assert len(out['/camera/depth/image_rect']) == PROCESSED + 1  # one topic each, over both files

    (tmp_path / 'rec' / 'rec_1.mcap').unlink()  # now only the metadata.yaml is missing
    summary = _process(tmp_path / 'rec', tmp_path / 'out2', model_path)
    assert summary['recovered'] == (
        'input recovered: metadata.yaml is missing (the recorder writes it when it stops); '
        f'read {ALL} messages'
    )
    assert (summary['frames'], summary['processed']) == (FRAMES, PROCESSED)
    assert _copied(tmp_path / 'out2') == messages


# -------------------------------------------------------------------------------------- sqlite3


def test_sqlite_without_metadata_and_db3_passed_directly(tmp_path, model_path, recordings):
    messages = _input_messages(recordings / 'sqlite3')
    shutil.copytree(recordings / 'sqlite3', tmp_path / 'in')
    (tmp_path / 'in' / 'metadata.yaml').unlink()
    summary = _process(tmp_path / 'in', tmp_path / 'out', model_path)
    assert summary['storage'] == 'sqlite3'
    assert summary['recovered'] == (
        'input recovered: metadata.yaml is missing (the recorder writes it when it stops); '
        f'read {ALL} messages'
    )
    assert (summary['frames'], summary['processed'], summary['skipped']) == (FRAMES, PROCESSED, 1)
    assert _copied(tmp_path / 'out') == messages
    with Reader(tmp_path / 'out') as reader:  # topics keep their type and QoS from the tables
        with Reader(recordings / 'sqlite3') as original:
            kept = {c.topic: (c.msgtype, c.ext) for c in original.connections}
        assert {c.topic: (c.msgtype, c.ext) for c in reader.connections if c.topic in kept} == kept

    summary = _process(_storage_file(tmp_path / 'in'), tmp_path / 'out_db3', model_path)
    assert summary['recovered'] is None  # a complete .db3 needs no recovery
    assert 'input recovered' not in bag.format_summary(summary)
    assert _copied(tmp_path / 'out_db3') == messages

    # Recorded with compression_mode 'message', which only metadata.yaml says.
    shutil.copytree(recordings / 'sqlite3_zstd_messages', tmp_path / 'zstd')
    (tmp_path / 'zstd' / 'metadata.yaml').unlink()
    summary = _process(tmp_path / 'zstd', tmp_path / 'out_zstd', model_path)
    assert (summary['frames'], summary['processed']) == (FRAMES, PROCESSED)
    assert _copied(tmp_path / 'out_zstd') == messages


def test_sqlite_cut_short_gives_the_rows_before_the_cut_or_a_refusal(
    tmp_path, model_path, recordings, capsys
):
    source = _storage_file(recordings / 'sqlite3')
    size = source.stat().st_size
    messages = _input_messages(recordings / 'sqlite3')
    read = []
    for percent in (99, 90, 75):
        cut = size * percent // 100
        damaged = _cut(source, tmp_path / f'in{percent}' / source.name, cut)
        output = tmp_path / f'out{percent}'
        summary = _process(damaged, output, model_path)
        n = summary['messages_read']
        _check_recovered(
            summary,
            output,
            messages[:n],
            f'is cut short at byte {cut} (its header records {size} bytes)',
        )
        read.append(n)
    assert ALL > read[0] >= read[1] >= read[2] > 0
    for percent, phrase in [
        (50, 'not one complete message'),
        (10, 'its tables or topics are unreadable'),
        (0, 'is not an sqlite3 database (50 bytes)'),
    ]:
        cut = max(size * percent // 100, 50)  # 50 bytes: inside sqlite's header
        damaged = _cut(source, tmp_path / f'in{percent}' / source.name, cut)
        _refused(damaged, tmp_path, model_path, capsys, phrase, f'in{percent}')
        _refused(damaged.parent, tmp_path, model_path, capsys, phrase)


def test_a_recovered_run_prints_what_it_read_on_the_command_line(
    tmp_path, model_path, recordings, capsys
):
    source = _storage_file(recordings / 'mcap_unchunked')
    raw = source.read_bytes()
    messages = _input_messages(recordings / 'mcap_unchunked')
    cut = raw.find(messages[10][2]) + 7
    damaged = _cut(source, tmp_path / 'in' / source.name, cut)
    argv = ['bag', str(damaged.parent), str(tmp_path / 'out'), '--model-path', model_path]
    assert cli.main([*argv, '--min-depth-m', '1.5', '--no-progress']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        'input recovered: metadata.yaml is missing (the recorder writes it when it stops); '
        f'{source.name} ends mid-message at byte {cut} (its record from byte '
        f'{raw.find(messages[10][2]) - 31}); read 10 messages'
    )
    assert lines[2].startswith('frames: 3 on /camera/image_raw, processed 3, skipped 0')


@pytest.mark.parametrize('codec', ['zstd', 'lz4'])
def test_an_unfinished_compressed_chunk_still_gives_its_complete_blocks(
    tmp_path, model_path, codec
):
    """A long chunk (ros2 bag's default is 768 KiB) cut short: its decodable part is read."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    types = typestore.types
    writer = Writer(tmp_path / 'noise', version=8, storage_plugin=StoragePlugin.MCAP)
    with writer:
        conn = writer.add_connection('/cam/image_raw', bag.IMAGE, typestore=typestore)
        for i in range(80):  # noise does not compress: 80 x 3.6 kB in one rosbags chunk
            stamp = types['builtin_interfaces/msg/Time'](sec=i, nanosec=0)
            image = types[bag.IMAGE](
                header=types['std_msgs/msg/Header'](stamp=stamp, frame_id='cam'),
                height=30,
                width=40,
                encoding='rgb8',
                is_bigendian=0,
                step=120,
                data=np.random.default_rng(i).integers(0, 256, 3600, dtype=np.uint8),
            )
            writer.write(conn, i + 1, typestore.serialize_cdr(image, bag.IMAGE))
    source = tmp_path / 'one_chunk' / 'one_chunk.mcap'
    source.parent.mkdir()
    compression = CompressionType.ZSTD if codec == 'zstd' else CompressionType.LZ4
    with open(_storage_file(tmp_path / 'noise'), 'rb') as src, open(source, 'wb') as out:
        mcap = McapWriter(out, chunk_size=2**20, compression=compression)
        mcap.start(profile='ros2', library='test')
        channel_id = None
        for schema, channel, message in make_reader(src).iter_messages():
            if channel_id is None:  # one topic
                schema_id = mcap.register_schema(schema.name, schema.encoding, schema.data)
                channel_id = mcap.register_channel(
                    channel.topic, channel.message_encoding, schema_id, channel.metadata
                )
            mcap.add_message(channel_id, message.log_time, message.data, message.publish_time)
        mcap.finish()
    messages = _input_messages(tmp_path / 'one_chunk')
    with open(source, 'rb') as f:
        (chunk,) = make_reader(f).get_summary().chunk_indexes
    cut = chunk.chunk_start_offset + chunk.chunk_length * 3 // 4
    damaged = _cut(source, tmp_path / 'in' / source.name, cut)
    summary = _process(damaged, tmp_path / 'out', model_path)
    read = summary['messages_read']
    assert 0 < read < len(messages)  # whole codec blocks (zstd 128 kB, lz4 64 kB) are there
    assert f'({read} of its messages are complete and were read)' in summary['recovered']
    assert _copied(tmp_path / 'out', ['/cam/image_raw']) == messages[:read]
    assert summary['processed'] == read


def test_directories_whose_metadata_does_not_match_their_files(
    tmp_path, model_path, recordings, capsys
):
    # A copy interrupted mid-file: metadata.yaml is there, the storage file is cut.
    shutil.copytree(recordings / 'mcap', tmp_path / 'copy')
    source = _storage_file(tmp_path / 'copy')
    messages = _input_messages(recordings / 'mcap')
    cut = source.read_bytes().find(messages[7][2]) + 1
    _cut(_storage_file(recordings / 'mcap'), source, cut)
    summary = _process(tmp_path / 'copy', tmp_path / 'out_copy', model_path)
    _check_recovered(summary, tmp_path / 'out_copy', messages[:7], f'ends mid-chunk at byte {cut}')
    assert 'metadata.yaml' not in summary['recovered']

    # metadata.yaml cut while the recorder wrote it: the tables have what it would say.
    shutil.copytree(recordings / 'sqlite3', tmp_path / 'half_yaml')
    metadata = tmp_path / 'half_yaml' / 'metadata.yaml'
    metadata.write_text(metadata.read_text()[:300])
    summary = _process(tmp_path / 'half_yaml', tmp_path / 'out_yaml', model_path)
    assert summary['recovered'].startswith('input recovered: metadata.yaml is unreadable (')
    assert (summary['frames'], summary['processed']) == (FRAMES, PROCESSED)

    # metadata.yaml naming a file that is not there: rosbags refuses, the advice is reindex.
    shutil.copytree(recordings / 'mcap', tmp_path / 'renamed')
    source = _storage_file(tmp_path / 'renamed')
    source.rename(source.with_name('renamed.mcap'))
    argv = ['bag', str(tmp_path / 'renamed'), str(tmp_path / 'out'), '--model-path', model_path]
    assert cli.main(argv) == 2
    line = capsys.readouterr().err
    assert line.startswith('moa-depth bag: error: cannot read ') and line.count('\n') == 1
    assert 'database files are missing' in line and 'rebuild it with `ros2 bag reindex`' in line
