package io.lakehouse.storage;

import io.delta.storage.HadoopFileSystemLogStore;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.util.Iterator;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FSDataOutputStreamBuilder;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.s3a.AWSServiceIOException;
import org.apache.hadoop.fs.s3a.RemoteFileChangedException;

/**
 * Delta's LogStore for {@code s3a://} tables written by several applications at once.
 *
 * <p>Delta needs a commit file {@code _delta_log/<version>.json} to be created by one writer
 * only. Its default for S3, {@code S3SingleDriverLogStore}, checks and creates under a lock of
 * the one JVM it runs in, so two applications can both create the same version and one commit
 * is lost. This store creates each commit with one {@code PutObject} carrying {@code
 * If-None-Match: *} (Hadoop's {@code fs.option.create.conditional.overwrite}, S3A 3.4.2 and
 * later with {@code fs.s3a.create.conditional.enabled}); the store refuses it when the object
 * exists, and the refusal becomes the {@link FileAlreadyExistsException} on which Delta checks
 * for conflicts and retries at the next version.
 *
 * <p>The commit is assembled in memory before the stream opens, so a failure while producing
 * it never publishes part of a commit: S3A publishes an object when its stream closes.
 */
public class S3ConditionalLogStore extends HadoopFileSystemLogStore {

  /** Hadoop's option that makes a create conditional on the object's absence. */
  static final String CONDITIONAL_CREATE = "fs.option.create.conditional.overwrite";

  public S3ConditionalLogStore(Configuration hadoopConf) {
    super(hadoopConf);
  }

  @Override
  public void write(Path path, Iterator<String> actions, Boolean overwrite, Configuration conf)
      throws IOException {
    ByteArrayOutputStream content = new ByteArrayOutputStream();
    while (actions.hasNext()) {
      content.writeBytes((actions.next() + "\n").getBytes(StandardCharsets.UTF_8));
    }
    FileSystem fs = path.getFileSystem(conf);
    try {
      FSDataOutputStreamBuilder<?, ?> builder = fs.createFile(path).overwrite(overwrite);
      if (!overwrite) {
        builder.must(CONDITIONAL_CREATE, true);
      }
      try (FSDataOutputStream out = builder.build()) {
        out.write(content.toByteArray());
      }
    } catch (org.apache.hadoop.fs.FileAlreadyExistsException | RemoteFileChangedException e) {
      throw overwrite ? e : conflict(path, e);
    } catch (AWSServiceIOException e) {
      // 412: the object exists; 409: another conditional write to it was in flight.
      if (!overwrite && (e.statusCode() == 412 || e.statusCode() == 409)) {
        throw conflict(path, e);
      }
      throw e;
    }
  }

  private static FileAlreadyExistsException conflict(Path path, IOException cause) {
    FileAlreadyExistsException conflict = new FileAlreadyExistsException(path.toString());
    conflict.initCause(cause);
    return conflict;
  }

  @Override
  public Boolean isPartialWriteVisible(Path path, Configuration hadoopConf) {
    return false;
  }
}
