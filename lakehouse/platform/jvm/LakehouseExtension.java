package io.lakehouse.catalog;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import scala.Function1;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * The session extension of the folder catalog: one check rule, run after each statement's
 * analysis and before it runs, that reconciles the names the statement's command names (see
 * {@link LakehouseCatalog#syncCommand}). Listed in {@code spark.sql.extensions} after Delta's.
 */
public class LakehouseExtension extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    extensions.injectCheckRule(new CheckRuleBuilder());
    return BoxedUnit.UNIT;
  }

  private static final class CheckRuleBuilder
      extends AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>> {
    @Override
    public Function1<LogicalPlan, BoxedUnit> apply(SparkSession spark) {
      return new SyncRule(spark);
    }
  }

  private static final class SyncRule extends AbstractFunction1<LogicalPlan, BoxedUnit> {
    private final SparkSession spark;

    SyncRule(SparkSession spark) {
      this.spark = spark;
    }

    @Override
    public BoxedUnit apply(LogicalPlan plan) {
      LakehouseCatalog.syncCommand(spark, plan);
      return BoxedUnit.UNIT;
    }
  }
}
