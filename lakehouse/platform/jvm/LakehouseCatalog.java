package io.lakehouse.catalog;

import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.NamespaceAlreadyExistsException;
import org.apache.spark.sql.catalyst.analysis.NoSuchNamespaceException;
import org.apache.spark.sql.catalyst.analysis.NoSuchTableException;
import org.apache.spark.sql.catalyst.analysis.NonEmptyNamespaceException;
import org.apache.spark.sql.catalyst.analysis.TableAlreadyExistsException;
import org.apache.spark.sql.catalyst.catalog.CatalogTable;
import org.apache.spark.sql.catalyst.catalog.SessionCatalog;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.connector.catalog.CatalogPlugin;
import org.apache.spark.sql.connector.catalog.Column;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.NamespaceChange;
import org.apache.spark.sql.connector.catalog.StagedTable;
import org.apache.spark.sql.connector.catalog.SupportsNamespaces;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableChange;
import org.apache.spark.sql.connector.catalog.TableInfo;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.delta.catalog.DeltaCatalog;
import org.apache.spark.sql.execution.datasources.v2.V2SessionCatalog;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/**
 * Delta's session catalog over the platform's folder layout ({@link FolderCatalog}).
 *
 * <p>Set as {@code spark.sql.catalog.spark_catalog} with the root in {@code
 * spark.sql.catalog.spark_catalog.root}. Every call about a name or a schema first reconciles it
 * with the disk, then lets Delta's catalog answer from the in-memory catalog, so Delta's own
 * handling of each statement (managed and external tables, CTAS, time travel, properties,
 * comments, DESCRIBE) is unchanged. Schemas are located at {@code <root>/<schema>}, so a managed
 * table lands at {@code <root>/<schema>/<table>}.
 *
 * <p>The same class under another name ({@code spark.sql.catalog.lakehouse}) gives three-part
 * names, {@code lakehouse.silver.customers}: it works over the same session catalog and reports
 * the session catalog's name, so Spark treats it as the session catalog (views, V1 tables).
 */
public class LakehouseCatalog extends DeltaCatalog {

  /** The configuration key of the root folder or URI of the tables. */
  public static final String ROOT_KEY = "spark.sql.catalog.spark_catalog.root";

  private FolderCatalog folders;

  @Override
  public void initialize(String name, CaseInsensitiveStringMap options) {
    super.initialize(name, options);
    org.apache.spark.sql.classic.SparkSession session = classic(spark());
    String root = options.get("root");
    if (root == null) {
      root = session.conf().get(ROOT_KEY, null);
    }
    if (root == null) {
      throw new IllegalArgumentException(
          "the catalog " + name + " needs its root folder in " + ROOT_KEY);
    }
    if (!FolderCatalog.SESSION_CATALOG.equalsIgnoreCase(name)) {
      setDelegateCatalog(new V2SessionCatalog(session.sessionState().catalog()));
    }
    folders =
        FolderCatalog.of(
            session.sharedState().externalCatalog(),
            root,
            session.sparkContext().hadoopConfiguration());
  }

  private static org.apache.spark.sql.classic.SparkSession classic(SparkSession spark) {
    return (org.apache.spark.sql.classic.SparkSession) spark;
  }

  private SessionCatalog sessionCatalog() {
    return classic(spark()).sessionState().catalog();
  }

  private static String namespace(String[] parts) {
    return parts.length == 1 ? parts[0].toLowerCase(Locale.ROOT) : null;
  }

  /** Reconcile {@code ident} with the disk (nothing for path identifiers such as delta.`/x`). */
  void sync(Identifier ident) {
    String db = namespace(ident.namespace());
    if (db != null) {
      folders.syncTable(db, ident.name().toLowerCase(Locale.ROOT), sessionCatalog());
    }
  }

  void sync(TableIdentifier ident) {
    if (ident.catalog().isDefined()
        && !FolderCatalog.SESSION_CATALOG.equalsIgnoreCase(ident.catalog().get())) {
      return;
    }
    SessionCatalog session = sessionCatalog();
    String db =
        ident.database().isDefined() ? ident.database().get() : session.getCurrentDatabase();
    folders.syncTable(
        db.toLowerCase(Locale.ROOT), ident.table().toLowerCase(Locale.ROOT), session);
  }

  /**
   * Reconcile the names a command names directly, before it runs.
   *
   * <p>Spark runs some commands against the in-memory catalog without asking this catalog
   * first (CREATE VIEW, DROP VIEW, CREATE TABLE of a non-Delta source); a check rule calls this
   * after analysis so that they see what other applications did.
   */
  public static void syncCommand(SparkSession spark, LogicalPlan plan) {
    if (!(plan instanceof Command)) {
      return;
    }
    CatalogPlugin plugin =
        classic(spark).sessionState().catalogManager().v2SessionCatalog();
    if (!(plugin instanceof LakehouseCatalog catalog)) {
      return;
    }
    scala.collection.Iterator<Object> fields = plan.productIterator();
    while (fields.hasNext()) {
      Object field = fields.next();
      if (field instanceof TableIdentifier ident) {
        catalog.sync(ident);
      } else if (field instanceof CatalogTable table) {
        catalog.sync(table.identifier());
      }
    }
  }

  /**
   * The root of {@code spark}'s session catalog, or null when it is not this catalog.
   *
   * <p>The root is fixed when the catalog is loaded: a later change of {@link #ROOT_KEY} in a
   * running session (a second {@code getOrCreate} with other settings) does not move it.
   */
  public static String rootOf(SparkSession spark) {
    CatalogPlugin plugin = classic(spark).sessionState().catalogManager().v2SessionCatalog();
    return plugin instanceof LakehouseCatalog catalog ? catalog.folders.root().toString() : null;
  }

  // --- tables -------------------------------------------------------------------------------

  @Override
  public Table loadTable(Identifier ident) {
    sync(ident);
    return super.loadTable(ident);
  }

  @Override
  public Table loadTable(Identifier ident, String version) {
    sync(ident);
    return super.loadTable(ident, version);
  }

  @Override
  public Table loadTable(Identifier ident, long timestamp) {
    sync(ident);
    return super.loadTable(ident, timestamp);
  }

  @Override
  public boolean tableExists(Identifier ident) {
    sync(ident);
    return super.tableExists(ident);
  }

  @Override
  public void invalidateTable(Identifier ident) {
    sync(ident);
    super.invalidateTable(ident);
  }

  @Override
  public Identifier[] listTables(String[] ns) throws NoSuchNamespaceException {
    String db = namespace(ns);
    if (db != null) {
      folders.syncTables(db, sessionCatalog());
    }
    return super.listTables(ns);
  }

  @Override
  public Table createTable(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.createTable(ident, schema, partitions, properties);
  }

  @Override
  public Table createTable(
      Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.createTable(ident, columns, partitions, properties);
  }

  @Override
  public StagedTable stageCreate(Identifier ident, TableInfo info)
      throws TableAlreadyExistsException, NoSuchNamespaceException {
    sync(ident);
    return super.stageCreate(ident, info);
  }

  @Override
  public StagedTable stageCreate(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageCreate(ident, schema, partitions, properties);
  }

  @Override
  public StagedTable stageCreate(
      Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageCreate(ident, columns, partitions, properties);
  }

  @Override
  public StagedTable stageReplace(Identifier ident, TableInfo info)
      throws NoSuchNamespaceException, NoSuchTableException {
    sync(ident);
    return super.stageReplace(ident, info);
  }

  @Override
  public StagedTable stageReplace(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageReplace(ident, schema, partitions, properties);
  }

  @Override
  public StagedTable stageReplace(
      Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageReplace(ident, columns, partitions, properties);
  }

  @Override
  public StagedTable stageCreateOrReplace(Identifier ident, TableInfo info)
      throws NoSuchNamespaceException {
    sync(ident);
    return super.stageCreateOrReplace(ident, info);
  }

  @Override
  public StagedTable stageCreateOrReplace(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageCreateOrReplace(ident, schema, partitions, properties);
  }

  @Override
  public StagedTable stageCreateOrReplace(
      Identifier ident, Column[] columns, Transform[] partitions, Map<String, String> properties) {
    sync(ident);
    return super.stageCreateOrReplace(ident, columns, partitions, properties);
  }

  @Override
  public Table alterTable(Identifier ident, TableChange... changes) {
    sync(ident);
    return super.alterTable(ident, changes);
  }

  @Override
  public boolean dropTable(Identifier ident) {
    sync(ident);
    return super.dropTable(ident);
  }

  @Override
  public boolean purgeTable(Identifier ident) {
    sync(ident);
    return super.purgeTable(ident);
  }

  @Override
  public void renameTable(Identifier from, Identifier to)
      throws NoSuchTableException, TableAlreadyExistsException {
    sync(from);
    sync(to);
    super.renameTable(from, to);
  }

  // --- schemas ------------------------------------------------------------------------------

  @Override
  public String[][] listNamespaces() throws NoSuchNamespaceException {
    folders.syncNamespaces(sessionCatalog());
    return super.listNamespaces();
  }

  @Override
  public String[][] listNamespaces(String[] ns) throws NoSuchNamespaceException {
    folders.syncNamespaces(sessionCatalog());
    return super.listNamespaces(ns);
  }

  @Override
  public boolean namespaceExists(String[] ns) {
    String db = namespace(ns);
    if (db == null) {
      return super.namespaceExists(ns);
    }
    return folders.syncNamespace(db, sessionCatalog());
  }

  @Override
  public Map<String, String> loadNamespaceMetadata(String[] ns) throws NoSuchNamespaceException {
    String db = namespace(ns);
    if (db != null) {
      folders.syncNamespace(db, sessionCatalog());
    }
    return super.loadNamespaceMetadata(ns);
  }

  @Override
  public void createNamespace(String[] ns, Map<String, String> metadata)
      throws NamespaceAlreadyExistsException {
    String db = namespace(ns);
    if (db == null) {
      super.createNamespace(ns, metadata);
      return;
    }
    if (!FolderCatalog.validNamespace(db)) {
      throw new IllegalArgumentException(
          "schema names are lower-case letters, digits, '_' and '-', starting with a letter or a "
              + "digit: "
              + db);
    }
    String location = folders.namespacePath(db).toString();
    String asked = metadata.get(SupportsNamespaces.PROP_LOCATION);
    if (asked != null && !asked.isEmpty() && !sameLocation(asked, location)) {
      throw new UnsupportedOperationException(
          "every schema lives in its folder under the catalog root ("
              + location
              + "); create the schema without LOCATION, and tables elsewhere with "
              + "CREATE TABLE ... LOCATION");
    }
    if (folders.syncNamespace(db, sessionCatalog())) {
      throw new NamespaceAlreadyExistsException(ns);
    }
    Map<String, String> located = new HashMap<>(metadata);
    located.put(SupportsNamespaces.PROP_LOCATION, location);
    super.createNamespace(ns, located);
  }

  private static boolean sameLocation(String a, String b) {
    return new org.apache.hadoop.fs.Path(a).toUri().getPath()
        .equals(new org.apache.hadoop.fs.Path(b).toUri().getPath());
  }

  @Override
  public void alterNamespace(String[] ns, NamespaceChange... changes)
      throws NoSuchNamespaceException {
    String db = namespace(ns);
    if (db != null) {
      folders.syncNamespace(db, sessionCatalog());
    }
    super.alterNamespace(ns, changes);
  }

  @Override
  public boolean dropNamespace(String[] ns, boolean cascade)
      throws NoSuchNamespaceException, NonEmptyNamespaceException {
    String db = namespace(ns);
    if (db != null) {
      folders.syncTables(db, sessionCatalog());
    }
    return super.dropNamespace(ns, cascade);
  }
}
