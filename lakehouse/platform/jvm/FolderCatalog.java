package io.lakehouse.catalog;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.WeakHashMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.catalog.AlterTableEvent;
import org.apache.spark.sql.catalyst.catalog.BucketSpec;
import org.apache.spark.sql.catalyst.catalog.CatalogDatabase;
import org.apache.spark.sql.catalyst.catalog.CatalogStorageFormat;
import org.apache.spark.sql.catalyst.catalog.CatalogTable;
import org.apache.spark.sql.catalyst.catalog.CatalogTableType;
import org.apache.spark.sql.catalyst.catalog.CreateDatabaseEvent;
import org.apache.spark.sql.catalyst.catalog.CreateTableEvent;
import org.apache.spark.sql.catalyst.catalog.DropDatabaseEvent;
import org.apache.spark.sql.catalyst.catalog.DropTableEvent;
import org.apache.spark.sql.catalyst.catalog.ExternalCatalog;
import org.apache.spark.sql.catalyst.catalog.ExternalCatalogEvent;
import org.apache.spark.sql.catalyst.catalog.ExternalCatalogEventListener;
import org.apache.spark.sql.catalyst.catalog.ExternalCatalogWithListener;
import org.apache.spark.sql.catalyst.catalog.RenameTableEvent;
import org.apache.spark.sql.catalyst.catalog.SessionCatalog;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The folder layout under one root as the metastore of every Spark application that uses it.
 *
 * <p>What is on disk is the truth; each application's in-memory catalog is a cache of it:
 *
 * <ul>
 *   <li>a schema is a folder {@code <root>/<schema>};
 *   <li>a managed Delta table is a folder {@code <root>/<schema>/<table>} holding a {@code
 *       _delta_log};
 *   <li>every other object (an external table, a view, a managed table of another format) is
 *       one JSON file {@code <root>/_registry/<schema>.<table>.json}, written whole and renamed
 *       into place, so concurrent writers of different objects never touch the same file and a
 *       reader never sees half an entry.
 * </ul>
 *
 * <p>Before the catalog answers about a name it reconciles that name (or that schema) with the
 * disk ({@link #syncTable}, {@link #syncNamespace}), so an object another application created or
 * dropped a moment ago is seen at once, with no shared process and no lock. Changes this
 * application makes reach the disk through a synchronous listener on the external catalog
 * ({@link #onEvent}): every path that writes the catalog (Delta's, Spark's data source and view
 * commands) passes there. Reconciling writes the unwrapped in-memory catalog, which raises no
 * events and so is never written back.
 */
final class FolderCatalog implements ExternalCatalogEventListener {

  static final String REGISTRY = "_registry";
  static final String SESSION_CATALOG = "spark_catalog";
  private static final Pattern NAMESPACE = Pattern.compile("[a-z0-9][a-z0-9_-]*");
  private static final Pattern TABLE = Pattern.compile("[a-z0-9_][a-z0-9_-]*");
  private static final Map<ExternalCatalog, FolderCatalog> BY_CATALOG =
      Collections.synchronizedMap(new WeakHashMap<>());

  private final Path root;
  private final Configuration hadoopConf;
  private final ExternalCatalog memory;
  private final ObjectMapper json = new ObjectMapper();
  /** The registry text each in-memory entry was built from (or written as), by key. */
  private final Map<String, String> applied = new ConcurrentHashMap<>();

  private FolderCatalog(Path root, Configuration hadoopConf, ExternalCatalog memory) {
    this.root = root;
    this.hadoopConf = hadoopConf;
    this.memory = memory;
  }

  /** The folder catalog of the application's shared external catalog, made on first use. */
  static FolderCatalog of(ExternalCatalogWithListener external, String root, Configuration conf) {
    synchronized (BY_CATALOG) {
      FolderCatalog found = BY_CATALOG.get(external);
      if (found != null) {
        return found;
      }
      try {
        Path path = new Path(root);
        FileSystem fs = path.getFileSystem(conf);
        path = fs.makeQualified(path);
        fs.mkdirs(path);
        found = new FolderCatalog(path, conf, external.unwrapped());
      } catch (IOException e) {
        throw new UncheckedIOException("cannot open the catalog root " + root, e);
      }
      external.addListener(found);
      BY_CATALOG.put(external, found);
      return found;
    }
  }

  Path root() {
    return root;
  }

  static boolean validNamespace(String name) {
    return NAMESPACE.matcher(name).matches();
  }

  static boolean validTable(String name) {
    return TABLE.matcher(name).matches();
  }

  private FileSystem fs() throws IOException {
    return root.getFileSystem(hadoopConf);
  }

  Path namespacePath(String db) {
    return new Path(root, db);
  }

  Path tablePath(String db, String table) {
    return new Path(namespacePath(db), table);
  }

  private Path registryPath(String db, String table) {
    return new Path(new Path(root, REGISTRY), db + "." + table + ".json");
  }

  private static String key(String db, String table) {
    return db + "." + table;
  }

  // --- what is on disk ----------------------------------------------------------------------

  boolean namespaceOnDisk(String db) {
    if ("default".equals(db)) {
      return true;
    }
    if (!validNamespace(db)) {
      return false;
    }
    try {
      return fs().getFileStatus(namespacePath(db)).isDirectory();
    } catch (FileNotFoundException e) {
      return false;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** The schemas on disk: the root's folders with a valid name, and {@code default}. */
  Set<String> namespacesOnDisk() {
    Set<String> found = new TreeSet<>();
    found.add("default");
    try {
      for (FileStatus status : fs().listStatus(root)) {
        String name = status.getPath().getName();
        if (status.isDirectory() && validNamespace(name)) {
          found.add(name);
        }
      }
    } catch (FileNotFoundException e) {
      return found;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return found;
  }

  /** The tables and views of {@code db} on disk: Delta folders and registry entries. */
  Set<String> tablesOnDisk(String db) {
    Set<String> found = new TreeSet<>();
    try {
      FileSystem fs = fs();
      try {
        for (FileStatus status : fs.listStatus(namespacePath(db))) {
          String name = status.getPath().getName();
          if (status.isDirectory()
              && validTable(name)
              && fs.exists(new Path(status.getPath(), "_delta_log"))) {
            found.add(name);
          }
        }
      } catch (FileNotFoundException e) {
        // A dropped schema may still have registry entries to find.
      }
      String prefix = db + ".";
      try {
        for (FileStatus status : fs.listStatus(new Path(root, REGISTRY))) {
          String file = status.getPath().getName();
          if (file.startsWith(prefix) && file.endsWith(".json")) {
            String name = file.substring(prefix.length(), file.length() - ".json".length());
            if (validTable(name)) {
              found.add(name);
            }
          }
        }
      } catch (FileNotFoundException e) {
        return found;
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return found;
  }

  private boolean isDeltaFolder(String db, String table) throws IOException {
    return fs().exists(new Path(tablePath(db, table), "_delta_log"));
  }

  private String readRegistry(String db, String table) throws IOException {
    try (InputStream in = fs().open(registryPath(db, table))) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (FileNotFoundException e) {
      return null;
    }
  }

  private void writeRegistry(String db, String table, String text) throws IOException {
    Path target = registryPath(db, table);
    FileSystem fs = fs();
    fs.mkdirs(target.getParent());
    if (fs instanceof RawLocalFileSystem || fs instanceof LocalFileSystem) {
      // Written beside the target, then renamed over it: readers see the old or the new entry.
      java.nio.file.Path file = java.nio.file.Paths.get(target.toUri());
      java.nio.file.Path tmp =
          file.resolveSibling("." + file.getFileName() + "." + UUID.randomUUID() + ".tmp");
      Files.writeString(tmp, text);
      Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    } else {
      // Object stores make a whole object visible at once.
      try (OutputStream out = fs.create(target, true)) {
        out.write(text.getBytes(StandardCharsets.UTF_8));
      }
    }
  }

  private void deleteRegistry(String db, String table) throws IOException {
    fs().delete(registryPath(db, table), false);
    applied.remove(key(db, table));
  }

  // --- reconciling the in-memory catalog with the disk --------------------------------------

  /** Make the in-memory schemas those on disk; each located at its folder. */
  synchronized void syncNamespaces(SessionCatalog session) {
    Set<String> disk = namespacesOnDisk();
    for (String db : disk) {
      ensureDatabase(db);
    }
    for (String db : CollectionConverters.asJava(memory.listDatabases())) {
      if (!disk.contains(db)) {
        evictDatabase(db, session);
      }
    }
  }

  /** Reconcile schema {@code db}; return whether it exists. */
  synchronized boolean syncNamespace(String db, SessionCatalog session) {
    if (namespaceOnDisk(db)) {
      ensureDatabase(db);
      return true;
    }
    if (memory.databaseExists(db)) {
      evictDatabase(db, session);
    }
    return false;
  }

  /** Reconcile every table and view of schema {@code db}. */
  synchronized void syncTables(String db, SessionCatalog session) {
    if (!syncNamespace(db, session)) {
      return;
    }
    Set<String> names = new TreeSet<>(tablesOnDisk(db));
    names.addAll(CollectionConverters.asJava(memory.listTables(db)));
    for (String name : names) {
      syncTable(db, name, session);
    }
  }

  /** Reconcile one name: registry entry first, then a Delta folder, else nothing. */
  synchronized void syncTable(String db, String table, SessionCatalog session) {
    if (!validNamespace(db) && !"default".equals(db) || !validTable(table)) {
      return;
    }
    if (!syncNamespace(db, session)) {
      return;
    }
    String k = key(db, table);
    try {
      boolean cached = memory.tableExists(db, table);
      String entry = readRegistry(db, table);
      if (entry != null) {
        if (cached && entry.equals(applied.get(k))) {
          return;
        }
        CatalogTable definition = fromJson(entry);
        if (cached) {
          evictTable(db, table, session);
        }
        memory.createTable(definition, false);
        applied.put(k, entry);
        invalidate(session, db, table);
      } else if (isDeltaFolder(db, table)) {
        if (cached && isFolderTable(memory.getTable(db, table))) {
          return;
        }
        if (cached) {
          evictTable(db, table, session);
        }
        memory.createTable(folderTable(db, table), false);
        invalidate(session, db, table);
      } else if (cached) {
        evictTable(db, table, session);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private void ensureDatabase(String db) {
    URI location = namespacePath(db).toUri();
    if (!memory.databaseExists(db)) {
      memory.createDatabase(new CatalogDatabase(db, "", location, emptyMap()), true);
      return;
    }
    CatalogDatabase current = memory.getDatabase(db);
    if (!location.equals(current.locationUri())) {
      memory.alterDatabase(
          new CatalogDatabase(db, current.description(), location, current.properties()));
    }
  }

  /** Forget a schema another application dropped, leaving every file where it is. */
  private void evictDatabase(String db, SessionCatalog session) {
    for (String table : CollectionConverters.asJava(memory.listTables(db))) {
      evictTable(db, table, session);
    }
    CatalogDatabase current = memory.getDatabase(db);
    // The in-memory catalog deletes a dropped schema's folder: point it at one that never exists.
    URI nowhere =
        new Path(System.getProperty("java.io.tmpdir"), "lakehouse-evicted-" + UUID.randomUUID())
            .toUri();
    memory.alterDatabase(
        new CatalogDatabase(db, current.description(), nowhere, current.properties()));
    memory.dropDatabase(db, true, true);
  }

  /** Forget one table, leaving its files where they are. */
  private void evictTable(String db, String table, SessionCatalog session) {
    CatalogTable current = memory.getTable(db, table);
    if (current.tableType().equals(CatalogTableType.MANAGED())) {
      // The in-memory catalog deletes a dropped managed table's folder: make it external first.
      memory.alterTable(withType(current, CatalogTableType.EXTERNAL()));
    }
    memory.dropTable(db, table, true, false);
    applied.remove(key(db, table));
    invalidate(session, db, table);
  }

  private static void invalidate(SessionCatalog session, String db, String table) {
    if (session != null) {
      session.invalidateCachedTable(
          new TableIdentifier(table, Option.apply(db), Option.apply(SESSION_CATALOG)));
    }
  }

  /** Whether {@code table} is a managed Delta table in its schema's folder. */
  boolean isFolderTable(CatalogTable table) {
    if (!table.tableType().equals(CatalogTableType.MANAGED())
        || !table.provider().isDefined()
        || !"delta".equalsIgnoreCase(table.provider().get())
        || !table.storage().locationUri().isDefined()) {
      return false;
    }
    try {
      FileSystem fs = fs();
      Path location = fs.makeQualified(new Path(table.storage().locationUri().get()));
      Path folder = tablePath(table.database(), table.identifier().table());
      return location.equals(fs.makeQualified(folder));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private CatalogTable folderTable(String db, String table) throws IOException {
    Path location = tablePath(db, table);
    long created = fs().getFileStatus(location).getModificationTime();
    CatalogStorageFormat storage =
        new CatalogStorageFormat(
            Option.apply(location.toUri()),
            Option.empty(),
            Option.empty(),
            Option.empty(),
            false,
            emptyMap(),
            Option.empty());
    return new CatalogTable(
        identifier(db, table),
        CatalogTableType.MANAGED(),
        storage,
        new StructType(),
        Option.apply("delta"),
        emptySeq(),
        Option.empty(),
        "",
        created,
        -1L,
        "",
        emptyMap(),
        Option.empty(),
        Option.empty(),
        Option.empty(),
        Option.empty(),
        emptySeq(),
        false,
        true,
        emptyMap(),
        Option.empty(),
        CatalogTable.$lessinit$greater$default$22());
  }

  // --- writing this application's changes to disk -------------------------------------------

  @Override
  public void onEvent(ExternalCatalogEvent event) {
    // Spark logs (and does not rethrow) what a listener throws.
    try {
      if (event instanceof CreateTableEvent e) {
        persist(e.database(), e.name());
      } else if (event instanceof AlterTableEvent e) {
        persist(e.database(), e.name());
      } else if (event instanceof DropTableEvent e) {
        forget(e.database(), e.name());
      } else if (event instanceof RenameTableEvent e) {
        forget(e.database(), e.name());
        persist(e.database(), e.newName());
      } else if (event instanceof CreateDatabaseEvent e) {
        if (validNamespace(e.database())) {
          fs().mkdirs(namespacePath(e.database()));
        }
      } else if (event instanceof DropDatabaseEvent e) {
        forgetNamespace(e.database());
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private synchronized void persist(String db, String table) throws IOException {
    if (!validNamespace(db) && !"default".equals(db) || !validTable(table)) {
      return;
    }
    if (!memory.tableExists(db, table)) {
      return;
    }
    CatalogTable definition = memory.getTable(db, table);
    if (isFolderTable(definition)) {
      deleteRegistry(db, table);
      return;
    }
    String text = toJson(definition);
    writeRegistry(db, table, text);
    applied.put(key(db, table), text);
  }

  private synchronized void forget(String db, String table) throws IOException {
    if (validTable(table)) {
      deleteRegistry(db, table);
    }
  }

  private synchronized void forgetNamespace(String db) throws IOException {
    for (String table : tablesOnDisk(db)) {
      deleteRegistry(db, table);
    }
  }

  // --- registry entries ---------------------------------------------------------------------

  String toJson(CatalogTable t) throws IOException {
    ObjectNode node = json.createObjectNode();
    node.put("format", 1);
    node.put("database", t.database());
    node.put("name", t.identifier().table());
    node.put("type", t.tableType().name());
    putOption(node, "provider", t.provider());
    CatalogStorageFormat storage = t.storage();
    node.put(
        "location",
        storage.locationUri().isDefined() ? storage.locationUri().get().toString() : null);
    putOption(node, "inputFormat", storage.inputFormat());
    putOption(node, "outputFormat", storage.outputFormat());
    putOption(node, "serde", storage.serde());
    node.put("compressed", storage.compressed());
    node.set("storageProperties", tree(storage.properties()));
    node.set("schema", json.readTree(t.schema().json()));
    node.set("partitionColumns", tree(t.partitionColumnNames()));
    if (t.bucketSpec().isDefined()) {
      BucketSpec bucket = t.bucketSpec().get();
      ObjectNode spec = node.putObject("bucketSpec");
      spec.put("numBuckets", bucket.numBuckets());
      spec.set("bucketColumns", tree(bucket.bucketColumnNames()));
      spec.set("sortColumns", tree(bucket.sortColumnNames()));
    }
    node.put("owner", t.owner());
    node.put("createTime", t.createTime());
    node.set("properties", tree(t.properties()));
    putOption(node, "comment", t.comment());
    putOption(node, "collation", t.collation());
    putOption(node, "viewText", t.viewText());
    putOption(node, "viewOriginalText", t.viewOriginalText());
    node.put("schemaPreservesCase", t.schemaPreservesCase());
    return json.writerWithDefaultPrettyPrinter().writeValueAsString(node) + "\n";
  }

  CatalogTable fromJson(String text) throws IOException {
    JsonNode node = json.readTree(text);
    String db = node.get("database").asText();
    String table = node.get("name").asText();
    CatalogStorageFormat storage =
        new CatalogStorageFormat(
            text(node, "location").isDefined()
                ? Option.apply(URI.create(node.get("location").asText()))
                : Option.empty(),
            text(node, "inputFormat"),
            text(node, "outputFormat"),
            text(node, "serde"),
            node.path("compressed").asBoolean(false),
            stringMap(node.get("storageProperties")),
            Option.empty());
    Option<BucketSpec> bucket = Option.empty();
    JsonNode spec = node.get("bucketSpec");
    if (spec != null && !spec.isNull()) {
      bucket =
          Option.apply(
              new BucketSpec(
                  spec.get("numBuckets").asInt(),
                  stringSeq(spec.get("bucketColumns")),
                  stringSeq(spec.get("sortColumns"))));
    }
    return new CatalogTable(
        identifier(db, table),
        CatalogTableType.apply(node.get("type").asText()),
        storage,
        (StructType) DataType.fromJson(node.get("schema").toString()),
        text(node, "provider"),
        stringSeq(node.get("partitionColumns")),
        bucket,
        node.path("owner").asText(""),
        node.path("createTime").asLong(System.currentTimeMillis()),
        -1L,
        "",
        stringMap(node.get("properties")),
        Option.empty(),
        text(node, "viewText"),
        text(node, "comment"),
        text(node, "collation"),
        emptySeq(),
        // Partitions are not kept in the registry: Spark finds them in the table's folders.
        false,
        node.path("schemaPreservesCase").asBoolean(true),
        emptyMap(),
        text(node, "viewOriginalText"),
        CatalogTable.$lessinit$greater$default$22());
  }

  private JsonNode tree(scala.collection.Map<String, String> map) {
    return json.valueToTree(CollectionConverters.asJava(map));
  }

  private JsonNode tree(scala.collection.Seq<String> seq) {
    return json.valueToTree(CollectionConverters.asJava(seq));
  }

  private static void putOption(ObjectNode node, String field, Option<String> value) {
    node.put(field, value.isDefined() ? value.get() : null);
  }

  private static Option<String> text(JsonNode node, String field) {
    JsonNode value = node.get(field);
    return value == null || value.isNull() ? Option.empty() : Option.apply(value.asText());
  }

  private static scala.collection.immutable.Map<String, String> stringMap(JsonNode node) {
    Map<String, String> map = new LinkedHashMap<>();
    if (node != null) {
      for (Map.Entry<String, JsonNode> field : node.properties()) {
        map.put(field.getKey(), field.getValue().asText());
      }
    }
    return toScala(map);
  }

  private static scala.collection.immutable.Seq<String> stringSeq(JsonNode node) {
    List<String> list = new ArrayList<>();
    if (node instanceof ArrayNode array) {
      array.forEach(item -> list.add(item.asText()));
    }
    return CollectionConverters.asScala(list).toSeq();
  }

  static TableIdentifier identifier(String db, String table) {
    return new TableIdentifier(table, Option.apply(db), Option.apply(SESSION_CATALOG));
  }

  static scala.collection.immutable.Map<String, String> emptyMap() {
    return toScala(Collections.emptyMap());
  }

  static scala.collection.immutable.Map<String, String> toScala(Map<String, String> map) {
    return scala.collection.immutable.Map$.MODULE$.from(CollectionConverters.asScala(map));
  }

  static scala.collection.immutable.Seq<String> emptySeq() {
    return CollectionConverters.asScala(new ArrayList<String>()).toSeq();
  }

  static CatalogTable withType(CatalogTable t, CatalogTableType type) {
    return new CatalogTable(
        t.identifier(),
        type,
        t.storage(),
        t.schema(),
        t.provider(),
        t.partitionColumnNames(),
        t.bucketSpec(),
        t.owner(),
        t.createTime(),
        t.lastAccessTime(),
        t.createVersion(),
        t.properties(),
        t.stats(),
        t.viewText(),
        t.comment(),
        t.collation(),
        t.unsupportedFeatures(),
        t.tracksPartitionsInCatalog(),
        t.schemaPreservesCase(),
        t.ignoredProperties(),
        t.viewOriginalText(),
        t.multipartIdentifier());
  }
}
